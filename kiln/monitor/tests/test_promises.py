"""Promises: results kept with history, state changes for the feed, checks of an instance."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from kiln.monitor.agent import Agent, SupervisorUnavailable, instance_roots
from kiln.monitor.promises import PromiseStore, Result, run_promises

pytestmark = pytest.mark.unit


def result(ok: bool, at: float, message: str = "") -> Result:
    return Result("inst", "api", at, ok, message or ("up" if ok else "down"), 0.01)


def test_history_and_changes(tmp_path: Path) -> None:
    store = PromiseStore(tmp_path / "promises.sqlite")
    outcomes = [True, True, False, False, True]
    changed = [store.record(result(ok, at)) for at, ok in enumerate(outcomes)]
    assert changed == [True, False, True, False, True]
    history = store.history("inst", "api")
    assert [h.ok for h in history] == outcomes[::-1]  # newest first
    assert store.since("inst", "api") == 4
    changes = store.changes()
    assert [c.ok for _, c in changes] == [True, False, True]
    assert changes[0][0] > changes[1][0]  # ids grow: Atom entry ids stay stable


def test_history_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kiln.monitor.promises.HISTORY_KEPT", 3)
    store = PromiseStore(tmp_path / "promises.sqlite")
    for at in range(10):
        store.record(result(True, at))
    assert [h.time for h in store.history("inst", "api", 100)] == [9, 8, 7]


def fake_instance(root: Path, checks: list[dict]) -> Path:
    (root / "etc").mkdir(parents=True)
    description = {"supervisord-conf": str(root / "etc" / "none.conf"), "checks": checks}
    (root / "etc" / "kiln-instance.json").write_text(json.dumps(description))
    return root


def test_an_instance_whose_port_is_closed_fails_its_promises(tmp_path: Path) -> None:
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))
        checks = [
            {"name": "open", "tcp": f"127.0.0.1:{listening.getsockname()[1]}"},
            {"name": "closed", "tcp": f"127.0.0.1:{closed.getsockname()[1]}"},
        ]
        root = fake_instance(tmp_path / "inst", checks)
        assert instance_roots([str(tmp_path / "*"), str(tmp_path / "nothing")]) == [root]
        results = run_promises({root: SupervisorUnavailable("no supervisord")})
    by_name = {r.promise: r for r in results}
    assert by_name["open"].ok and not by_name["closed"].ok
    assert not by_name["supervisord"].ok and by_name["supervisord"].message == "no supervisord"
    assert all(r.instance == "inst" and r.duration >= 0 for r in results)


def test_the_agent_samples_the_machine(tmp_path: Path) -> None:
    fake_instance(tmp_path / "down", [])
    agent = Agent("box", [str(tmp_path / "*")], disk_path=str(tmp_path))
    first = dict(agent.sample())
    assert set(first) == {"monitor.box.system"}  # the instance's supervisord is down
    assert isinstance(agent.infos[tmp_path / "down"], SupervisorUnavailable)
    second = agent.system()
    assert 0 <= second["cpu_percent"] <= 100 and second["memory_available_mib"] > 0
    assert second["net_recv_bytes_per_s"] >= 0  # rates from the second sample on


def test_the_agent_samples_a_program_and_counts_restarts() -> None:
    import os

    agent = Agent("box", [])
    info = {"name": "me", "pid": os.getpid(), "statename": "RUNNING", "start": 100}
    record = agent.program(Path("/x"), info)
    assert record["running"] and record["rss_mib"] > 5 and record["fds"] > 0
    assert agent.program(Path("/x"), {**info, "start": 200})["restarts"] == 1
    stopped = agent.program(Path("/x"), {**info, "pid": 0, "statename": "STOPPED"})
    assert not stopped["running"] and stopped["rss_mib"] == 0
    assert agent.program_tag(Path("/srv/my.inst"), "web app") == "monitor.box.my_inst.web_app"
