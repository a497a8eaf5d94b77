"""`kiln wendelin serve --catalog postgresql://...` against a real PostgreSQL: policies made by
the CLI, ingest, listings, a restart, and the password kept out of argv and logs."""

import time
from pathlib import Path

import pytest
import requests

from kiln.testing.postgres import PostgresServer
from kiln.testing.wendelin import ServerProcess, add_policy, cli

pytestmark = pytest.mark.integration


def post(server: ServerProcess, tag: str, records: list[dict], auth: tuple[str, str]) -> int:
    return requests.post(
        f"{server.url}/tags/{tag}", json=records, auth=auth, timeout=30
    ).status_code


def stream_names(server: ServerProcess, auth: tuple[str, str]) -> list[str]:
    answer = requests.get(f"{server.url}/api/streams", auth=auth, timeout=30)
    assert answer.status_code == 200, answer.text
    return sorted(stream["name"] for stream in answer.json())


def test_serve_on_postgresql_keeps_policies_and_listings_across_a_restart(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.new_database()
    secret = postgres_server.write_password_file(tmp_path / "catalog-password")
    catalog = ("--catalog", url, "--catalog-password-file", str(secret))
    root = str(tmp_path / "root")
    plant = add_policy(root, "plant", "--tag-pattern", "plant.**", *catalog)
    auth = (plant["user"], plant["password"])
    reader = cli("reader", "add", "--root", root, "ada", *catalog).split()
    reader_auth = (reader[1], reader[3])  # "user: ada\npassword: ..."

    server = ServerProcess(root, *catalog)
    with server:
        assert post(server, "plant.a", [{"v": 1}, {"v": 2}], auth) == 204
        assert stream_names(server, reader_auth) == ["plant.a"]
        # A policy added by the CLI while the service runs is taken within a second or so.
        late = add_policy(root, "late", "--tag-pattern", "late.*", *catalog)
        deadline = time.monotonic() + 5
        while post(server, "late.b", [{"v": 3}], (late["user"], late["password"])) != 204:
            assert time.monotonic() < deadline, "the late policy was never accepted"
            time.sleep(0.1)
    assert server.process is not None and server.process.returncode == 0, server.log()
    listed = cli("stream", "list", "--root", root, *catalog)  # synced on shutdown
    assert "plant.a\tpolicy=plant\tkind=entries" in listed and "entries=2" in listed
    assert "late.b\tpolicy=late" in listed
    assert not (Path(root) / "catalog.sqlite").exists()  # nothing in the embedded catalog

    with server:  # the same root, ports and catalog: everything is still there
        assert post(server, "plant.a", [{"v": 4}], auth) == 204
        assert stream_names(server, reader_auth) == ["late.b", "plant.a"]
        entries = requests.get(
            f"{server.url}/api/streams/plant.a/entries?format=json", auth=auth, timeout=30
        ).json()
        assert [record for _, record in entries] == [{"v": 1}, {"v": 2}, {"v": 4}]
        policies = cli("policy", "list", "--root", root, *catalog)
        assert "late\tuser=" in policies and "plant\tuser=" in policies
        assert postgres_server.password not in server.log()


def test_serve_refuses_a_catalog_it_cannot_use_with_a_message(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.new_database()
    secret = postgres_server.write_password_file(tmp_path / "catalog-password")
    secret.chmod(0o640)
    server = ServerProcess(
        str(tmp_path / "root"), "--catalog", url, "--catalog-password-file", str(secret)
    )
    with pytest.raises(RuntimeError, match=r"readable by no one else \(mode 0640\)"):
        server.start()
    with_password = url.replace("kiln@", "kiln:secret@")
    server = ServerProcess(str(tmp_path / "root"), "--catalog", with_password)
    with pytest.raises(RuntimeError, match="must not hold the password"):
        server.start()
