"""The catalog of policies, reader accounts and streams.

``Catalog`` is the seam: the service only talks to this interface. ``SQLiteCatalog`` is the
embedded implementation for one machine; a PostgreSQL one can replace it without touching the
callers (the SQL is plain and the methods are small transactions).

Stream statistics here are a periodically refreshed copy for listing; the stream's own index is
the authority (see streams.py).
"""

import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    name: str
    tag_pattern: str
    http_user: str
    password_hash: str
    forward_user_auth: bool
    anonymous_forward: bool
    created: float


@dataclass(frozen=True, slots=True)
class StreamRecord:
    name: str
    policy: str
    kind: str
    size: int
    entries: int
    first_time: float | None
    last_time: float | None
    last_ingest: float | None


class Catalog(Protocol):
    def add_policy(self, policy: PolicyRecord) -> None: ...
    def remove_policy(self, name: str) -> bool: ...
    def policies(self) -> list[PolicyRecord]: ...
    def add_reader(self, name: str, password_hash: str) -> None: ...
    def reader_hash(self, name: str) -> str | None: ...
    def save_stream(self, stream: StreamRecord) -> None: ...
    def streams(self) -> list[StreamRecord]: ...
    def version(self) -> int: ...
    def close(self) -> None: ...


class AlreadyExists(ValueError):
    pass


_SCHEMA = """
create table if not exists policies (
    name text primary key,
    tag_pattern text not null,
    http_user text not null unique,
    password_hash text not null,
    forward_user_auth integer not null,
    anonymous_forward integer not null,
    created real not null
);
create table if not exists readers (
    name text primary key,
    password_hash text not null,
    created real not null
);
create table if not exists streams (
    name text primary key,
    policy text not null,
    kind text not null,
    size integer not null,
    entries integer not null,
    first_time real,
    last_time real,
    last_ingest real
);
"""


class SQLiteCatalog:
    """The embedded catalog: one SQLite file in WAL mode, shared by the service and the CLI."""

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._connection.execute("pragma journal_mode=wal")
            self._connection.execute("pragma busy_timeout=5000")
            self._connection.executescript(_SCHEMA)

    def _run(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._connection.execute(sql, parameters).fetchall()

    def add_policy(self, policy: PolicyRecord) -> None:
        try:
            self._run(
                "insert into policies values (?, ?, ?, ?, ?, ?, ?)",
                (
                    policy.name,
                    policy.tag_pattern,
                    policy.http_user,
                    policy.password_hash,
                    int(policy.forward_user_auth),
                    int(policy.anonymous_forward),
                    policy.created,
                ),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"policy {policy.name!r} already exists") from None

    def remove_policy(self, name: str) -> bool:
        with self._lock:
            cursor = self._connection.execute("delete from policies where name = ?", (name,))
            return cursor.rowcount > 0

    def policies(self) -> list[PolicyRecord]:
        rows = self._run("select * from policies order by name")
        return [
            PolicyRecord(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), row[6])
            for row in rows
        ]

    def add_reader(self, name: str, password_hash: str) -> None:
        try:
            self._run("insert into readers values (?, ?, ?)", (name, password_hash, time.time()))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"reader {name!r} already exists") from None

    def reader_hash(self, name: str) -> str | None:
        rows = self._run("select password_hash from readers where name = ?", (name,))
        return rows[0][0] if rows else None

    def save_stream(self, stream: StreamRecord) -> None:
        self._run(
            "insert or replace into streams values (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stream.name,
                stream.policy,
                stream.kind,
                stream.size,
                stream.entries,
                stream.first_time,
                stream.last_time,
                stream.last_ingest,
            ),
        )

    def streams(self) -> list[StreamRecord]:
        return [StreamRecord(*row) for row in self._run("select * from streams order by name")]

    def version(self) -> int:
        """Changes whenever another connection (the CLI) commits: cheap reload detection."""
        return self._run("pragma data_version")[0][0]

    def close(self) -> None:
        with self._lock:
            self._connection.close()
