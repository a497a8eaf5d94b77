"""The service process: one per root, clean shutdown."""

import io
import subprocess
import sys
import time

import msgpack
import pytest
import requests

from kiln.testing.forward_client import ForwardClient
from kiln.testing.wendelin import ServerProcess, add_policy, free_port
from kiln.wendelin import eventtime

pytestmark = pytest.mark.integration


def test_a_second_service_on_the_same_root_is_refused(tmp_path) -> None:
    with ServerProcess(str(tmp_path)):
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "kiln.wendelin",
                "serve",
                "--root",
                str(tmp_path),
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--forward-listen",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert second.returncode != 0
    assert "another wendelin service is using" in second.stderr


def test_sigterm_commits_what_it_acknowledged_and_exits_cleanly(tmp_path) -> None:
    credentials = add_policy(str(tmp_path), "term")
    server = ServerProcess(str(tmp_path)).start()
    client = ForwardClient("127.0.0.1", server.forward_port, credentials["shared_key"])
    for number in range(3000):
        entry = msgpack.packb([eventtime.pack(1_700_000_000 + number), {"n": number}])
        client.send_packed("term.s", entry, chunk=f"c{number}")
    acked = set()
    while len(acked) < 300:
        acked.add(client.read_ack())
    server.process.terminate()  # type: ignore[union-attr]
    try:
        while True:
            acked.add(client.read_ack())
    except (EOFError, ConnectionError):
        pass
    assert server.process.wait(30) == 0  # type: ignore[union-attr]
    server.start()
    try:
        data = requests.get(
            f"{server.url}/api/streams/term.s/data",
            auth=(credentials["user"], credentials["password"]),
        ).content
        stored = [record["n"] for _, record in msgpack.Unpacker(io.BytesIO(data))]
    finally:
        server.stop()
    assert len(stored) == len(set(stored))
    assert {f"c{number}" for number in stored} >= acked  # every ack was a durable chunk


def test_too_many_bodies_at_once_is_a_503_overload_not_memory_exhaustion(tmp_path) -> None:
    import base64
    import socket

    credentials = add_policy(str(tmp_path), "busy")
    auth = (credentials["user"], credentials["password"])
    body = b"".join(
        msgpack.packb([eventtime.pack(1_700_000_000), {"pad": "x" * 1000, "n": n}])
        for n in range(600)
    )  # about 600 KB: two of them do not fit a 1 MiB budget
    options = ("--max-queued-mib", "1", "--max-chunk-mib", "1")
    with ServerProcess(str(tmp_path), *options) as server:
        path = "/ingestion_policies/busy/ingest?reference=busy.s"
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        slow = socket.create_connection(("127.0.0.1", server.http_port))
        slow.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:1000]
        )
        time.sleep(0.3)  # the first body is being received
        second = requests.post(server.url + path, data=body, auth=auth)
        assert second.status_code == 503
        assert "overloaded" in second.text and second.headers["Retry-After"]
        slow.sendall(body[1000:])
        assert slow.recv(100).startswith(b"HTTP/1.1 204")
        slow.close()
        assert requests.post(server.url + path, data=body, auth=auth).status_code == 204


def test_https_ingest_and_client_with_the_services_own_certificate(tmp_path) -> None:
    from kiln.testing.wendelin import server_certificate
    from kiln.wendelin import client

    issued = server_certificate(tmp_path)
    cert = issued.ca  # what a client trusts
    root = str(tmp_path / "root")
    credentials = add_policy(root, "secure", "--tag-pattern", "sensor.**")
    auth = (credentials["user"], credentials["password"])
    options = ("--tls-cert", issued.certificate, "--tls-key", issued.key)
    with ServerProcess(root, *options, ca=issued.ca) as server:
        assert server.url.startswith("https://")
        body = msgpack.packb([eventtime.pack(1_700_000_000), {"n": 1}])
        url = f"{server.url}/ingestion_policies/secure/ingest?reference=sensor.tls"
        assert requests.post(url, data=body, auth=auth, verify=cert).status_code == 204
        with pytest.raises(requests.exceptions.SSLError):  # an unknown certificate is refused
            requests.post(url, data=body, auth=auth, verify=True)
        plain = url.replace("https://", "http://")
        with pytest.raises(requests.exceptions.ConnectionError):  # no clear-text fallback
            requests.post(plain, data=body, auth=auth)
        with client.connect(server.url, *auth, ca=cert) as context:
            assert [record for _, record in context.streams["sensor.tls"].entries()] == [{"n": 1}]
