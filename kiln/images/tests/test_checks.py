"""The outside checks, against a real `kiln wendelin serve` and `kiln cache serve` on 127.0.0.1.

The VM is replaced by its port map here (a check only talks to forwarded ports); the same
checks run against a booted image in tests/test_images.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from kiln.images import checks
from kiln.images.boottest import fresh_credentials
from kiln.testing.wendelin import ServerProcess, add_policy

IMAGE = {
    "instances": [
        {"name": "wendelin", "ports": {"forward": 24224, "http": 8420}, "main_port": 8420},
        {"name": "monitor", "ports": {"http": 8080}, "main_port": 8080},
    ],
    "status_port": 8000,
}


@pytest.mark.integration
def test_ingest_and_monitor_checks_pass_on_real_services(tmp_path):
    policy = add_policy(str(tmp_path / "srv"), "default")
    credentials = {"wendelin": {"wendelin-default-policy.json": json.dumps(policy)}}
    # The monitor page answers GET /healthz like Wendelin's HTTP port: a second real server
    # stands in for it (the monitor release's own test boots the real one).
    with (
        ServerProcess(str(tmp_path / "srv")) as server,
        ServerProcess(str(tmp_path / "monitor")) as monitor_page,
    ):
        vm = SimpleNamespace(ports={8420: server.http_port, 8080: monitor_page.http_port})
        detail = checks.check_ingest(vm, IMAGE, "wendelin", credentials)
        assert "stored once (X-Wendelin-Duplicate: already stored)" in detail
        assert "200" in checks.check_monitor(vm, IMAGE, "monitor", credentials)
        wrong = {"wendelin": {"p.json": json.dumps({**policy, "password": "x" * 32})}}
        with pytest.raises(checks.CheckFailed, match="not 204"):
            checks.check_ingest(vm, IMAGE, "wendelin", wrong)


@pytest.mark.unit
def test_ports_and_missing_credentials():
    assert checks.guest_ports(IMAGE) == [8000, 8080, 8420, 24224]
    assert checks.main_port(IMAGE, "wendelin") == 8420
    with pytest.raises(checks.CheckFailed, match="no ingestion policy credentials"):
        checks.wendelin_login({"wendelin": {"x.txt": "not json"}}, "wendelin")


@pytest.mark.unit
def test_fresh_credentials_differ_on_every_boot():
    first = {"wendelin": {"p.json": "a"}, "monitor": {"u.txt": "b"}}
    assert fresh_credentials(first, {"wendelin": {"p.json": "c"}, "monitor": {"u.txt": "d"}}).ok
    same = fresh_credentials(first, {"wendelin": {"p.json": "a"}, "monitor": {"u.txt": "d"}})
    assert not same.ok and "wendelin/p.json" in same.detail
    assert not fresh_credentials({}, {}).ok
