"""Promises, SlapOS style: each instance's health checks, run on a schedule, kept with history.

A promise is one check of an instance: every supervisor program must be RUNNING, and each
check its profile declares (``tcp``/``http`` in etc/kiln-instance.json) must pass.  Each
result (pass or fail, message, duration) is stored in SQLite with its history; a result
whose state differs from the promise's previous one is also a *change*, which the Atom feed
lists.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kiln.monitor.agent import SupervisorUnavailable
from kiln.software.instance import run_check

HISTORY_KEPT = 500  # results kept per promise
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  id INTEGER PRIMARY KEY, instance TEXT, promise TEXT, time REAL, ok INTEGER,
  message TEXT, duration REAL);
CREATE INDEX IF NOT EXISTS results_by_promise ON results (instance, promise, id);
CREATE TABLE IF NOT EXISTS changes (
  id INTEGER PRIMARY KEY, instance TEXT, promise TEXT, time REAL, ok INTEGER, message TEXT);
"""


@dataclass(frozen=True)
class Result:
    instance: str
    promise: str
    time: float
    ok: bool
    message: str
    duration: float


def _process_promises(root: Path, infos: list[dict] | SupervisorUnavailable) -> list[Result]:
    now = time.time()
    if isinstance(infos, SupervisorUnavailable):
        return [Result(root.name, "supervisord", now, False, str(infos), 0.0)]
    return [
        Result(
            root.name,
            f"process {info['name']}",
            now,
            info["statename"] == "RUNNING",
            f"{info['statename']} {info.get('description', '')}".strip(),
            0.0,
        )
        for info in infos
    ]


def run_promises(infos: dict[Path, list[dict] | SupervisorUnavailable]) -> list[Result]:
    """Run every promise of the instances in ``infos`` (their supervisor programs)."""
    results = []
    for root, programs in infos.items():
        results += _process_promises(root, programs)
        try:
            checks = json.loads((root / "etc" / "kiln-instance.json").read_text())["checks"]
        except (OSError, ValueError, KeyError) as error:
            results.append(Result(root.name, "description", time.time(), False, str(error), 0.0))
            continue
        for check in checks:
            started = time.monotonic()
            outcome = run_check(check)
            results.append(
                Result(
                    root.name,
                    outcome.name,
                    time.time(),
                    outcome.ok,
                    outcome.detail,
                    round(time.monotonic() - started, 4),
                )
            )
    return results


class PromiseStore:
    """Results and changes, in one SQLite file; small writes, on the caller's thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def record(self, result: Result) -> bool:
        """Store ``result``; answer whether the promise changed state (or is new)."""
        with self.db:
            previous = self.db.execute(
                "SELECT ok FROM results WHERE instance=? AND promise=? ORDER BY id DESC LIMIT 1",
                (result.instance, result.promise),
            ).fetchone()
            self.db.execute(
                "INSERT INTO results (instance, promise, time, ok, message, duration) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (*_row(result),),
            )
            changed = previous is None or bool(previous[0]) != result.ok
            if changed:
                self.db.execute(
                    "INSERT INTO changes (instance, promise, time, ok, message) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (result.instance, result.promise, result.time, result.ok, result.message),
                )
            self.db.execute(
                "DELETE FROM results WHERE instance=? AND promise=? AND id <= "
                "(SELECT id FROM results WHERE instance=? AND promise=? "
                "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (result.instance, result.promise, result.instance, result.promise, HISTORY_KEPT),
            )
        return changed

    def history(self, instance: str, promise: str, limit: int = 20) -> list[Result]:
        rows = self.db.execute(
            "SELECT instance, promise, time, ok, message, duration FROM results "
            "WHERE instance=? AND promise=? ORDER BY id DESC LIMIT ?",
            (instance, promise, limit),
        ).fetchall()
        return [Result(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in rows]

    def since(self, instance: str, promise: str) -> float | None:
        """When the promise entered its current state."""
        row = self.db.execute(
            "SELECT time FROM changes WHERE instance=? AND promise=? ORDER BY id DESC LIMIT 1",
            (instance, promise),
        ).fetchone()
        return row[0] if row else None

    def changes(self, limit: int = 50) -> list[tuple[int, Result]]:
        rows = self.db.execute(
            "SELECT id, instance, promise, time, ok, message FROM changes ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [(r[0], Result(r[1], r[2], r[3], bool(r[4]), r[5], 0.0)) for r in rows]


def _row(result: Result) -> tuple:
    values = asdict(result)
    return (
        values["instance"],
        values["promise"],
        values["time"],
        int(values["ok"]),
        values["message"],
        values["duration"],
    )
