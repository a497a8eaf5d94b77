"""The server against real HTTP clients on 127.0.0.1, with every kind of bad input."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from kiln.shacache.keys import generate_ed25519_key, sign_metadata
from kiln.testing.cache import RunningCache, start_cache_server

pytestmark = pytest.mark.integration


def stored_files(root: Path) -> list[Path]:
    """Every file that holds data: blobs, entries and temp files (not users or the CA)."""
    return sorted(
        p for sub in ("shacache", "shadir", "tmp") for p in (root / sub).rglob("*") if p.is_file()
    )


def raw_request(server: RunningCache, method: str, path: str, body: bytes = b"", **headers: str):
    """Send a request with the path exactly as given (requests would normalise it)."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest(method, path, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name.replace("_", "-"), value)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def entry_body(sha512: str, signature: str = "") -> str:
    metadata = json.dumps({"sha512": sha512})
    return json.dumps([metadata, signature])


def test_upload_download_range_and_head(cache_server: RunningCache) -> None:
    data = os.urandom(100_000)
    digest = hashlib.sha512(data).hexdigest()
    posted = requests.post(f"{cache_server.url}/shacache", data=data, auth=cache_server.auth)
    assert (posted.status_code, posted.text) == (201, digest)
    got = requests.get(f"{cache_server.url}/shacache/{digest}")
    assert got.content == data
    assert got.headers["Accept-Ranges"] == "bytes" and got.headers["ETag"]
    part = requests.get(f"{cache_server.url}/shacache/{digest}", headers={"Range": "bytes=10-19"})
    assert (part.status_code, part.content) == (206, data[10:20])
    head = requests.head(f"{cache_server.url}/shacache/{digest}")
    assert head.headers["Content-Length"] == str(len(data))
    assert requests.get(f"{cache_server.url}/shacache/{'0' * 128}").status_code == 404
    assert requests.get(f"{cache_server.url}/shadir/pypi:unknown=1").status_code == 404
    assert "POST /shacache" in cache_server.log()


def test_suffix_and_unsatisfiable_ranges_and_conditional_gets(cache_server: RunningCache) -> None:
    data = os.urandom(5_000)
    digest = requests.post(f"{cache_server.url}/shacache", data=data, auth=cache_server.auth).text
    url = f"{cache_server.url}/shacache/{digest}"
    tail = requests.get(url, headers={"Range": "bytes=-100"})
    assert (tail.status_code, tail.content) == (206, data[-100:])
    assert tail.headers["Content-Range"] == "bytes 4900-4999/5000"
    rest = requests.get(url, headers={"Range": "bytes=4990-"})
    assert (rest.status_code, rest.content) == (206, data[4990:])
    past = requests.get(url, headers={"Range": "bytes=5000-"})
    assert (past.status_code, past.headers["Content-Range"]) == (416, "bytes */5000")
    etag = requests.head(url).headers["ETag"]
    assert requests.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_put_by_name_verifies_the_bytes(cache_server: RunningCache) -> None:
    data = b"named blob"
    digest = hashlib.sha512(data).hexdigest()
    url = f"{cache_server.url}/shacache/{digest}"
    assert requests.put(url, data=data, auth=cache_server.auth).status_code == 201
    wrong = requests.put(
        f"{cache_server.url}/shacache/{'1' * 128}", data=data, auth=cache_server.auth
    )
    assert wrong.status_code == 400 and "hash mismatch" in wrong.text
    assert len(stored_files(cache_server.root)) == 1


def test_entries_append_newest_last_and_ignore_exact_duplicates(cache_server: RunningCache) -> None:
    url = f"{cache_server.url}/shadir/file-urlmd5:abc"
    first, second = entry_body("1" * 128, "a:QUJD"), entry_body("2" * 128, "a:QUJD")
    for body in (first, second, first):
        assert requests.put(url, data=body, auth=cache_server.auth).status_code == 201
    assert requests.get(url).json() == [json.loads(first), json.loads(second)]


def test_missing_or_wrong_credentials_are_refused_and_store_nothing(
    cache_server: RunningCache,
) -> None:
    url = f"{cache_server.url}/shacache"
    for auth in (None, ("uploader", "wrong"), ("nobody", cache_server.password)):
        response = requests.post(url, data=b"x", auth=auth)
        assert response.status_code == 401 and "credentials" in response.text
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        entry = requests.put(f"{cache_server.url}/shadir/k", data=entry_body("1" * 128), auth=auth)
        assert entry.status_code == 401
    assert stored_files(cache_server.root) == []
    assert cache_server.password not in cache_server.log().split("Ctrl-C stops it.")[-1]


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps(["{}", ""]),
        json.dumps([json.dumps({"sha512": "xyz"}), ""]),
        json.dumps([json.dumps({"sha512": "1" * 128}), "bad signature!"]),
    ],
)
def test_malformed_entries_are_refused(cache_server: RunningCache, body: str) -> None:
    response = requests.put(f"{cache_server.url}/shadir/k", data=body, auth=cache_server.auth)
    assert response.status_code == 400, response.text
    assert stored_files(cache_server.root) == []


def test_unsigned_entries_are_stored_by_default(cache_server: RunningCache) -> None:
    """As the reference servers do; --require-signed refuses them (tests/test_cache_protocol)."""
    response = requests.put(
        f"{cache_server.url}/shadir/k", data=entry_body("1" * 128), auth=cache_server.auth
    )
    assert response.status_code == 201, response.text


def test_server_side_trust_refuses_entries_by_other_keys(tmp_path: Path) -> None:
    alice, mallory = generate_ed25519_key("alice"), generate_ed25519_key("mallory")
    (tmp_path / "trust").write_text(alice.public_text + "\n")
    server = start_cache_server(tmp_path / "cache", "--trust", str(tmp_path / "trust"))
    try:
        metadata = json.dumps({"sha512": "1" * 128})
        url = f"{server.url}/shadir/k"
        for key, status in ((mallory, 403), (alice, 201)):
            body = json.dumps([metadata, sign_metadata(metadata, [key])])
            response = requests.put(url, data=body, auth=server.auth)
            assert response.status_code == status, response.text
        forged_text = json.dumps({"sha512": "2" * 128})
        forged = json.dumps([forged_text, sign_metadata(metadata, [alice])])
        response = requests.put(url, data=forged, auth=server.auth)
        assert response.status_code == 403 and "does not match" in response.text
        assert len(requests.get(url).json()) == 1
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/shacache/../users.json"),
        ("GET", "/shacache/..%2fusers.json"),
        ("GET", "/shacache/%2e%2e%2fusers.json"),
        ("GET", "/shadir/../../etc/passwd"),
        ("GET", "/shadir/%2e%2e/%2e%2e/etc/passwd"),
        ("GET", "/shadir//etc/passwd"),
        ("GET", "/shadir/a%00b"),
        ("PUT", "/shadir/../users.json"),
        ("PUT", "/shadir/%2e%2e%2fusers.json"),
        ("PUT", "/shadir//tmp/evil"),
        ("PUT", "/shadir/key%00"),
        ("PUT", "/shacache/..%2f..%2fevil"),
    ],
)
def test_path_traversal_is_refused(cache_server: RunningCache, method: str, path: str) -> None:
    users_before = (cache_server.root / "users.json").read_bytes()
    body = entry_body("1" * 128, "a:QUJD").encode() if method == "PUT" else b""
    import base64

    token = base64.b64encode(f"{cache_server.user}:{cache_server.password}".encode()).decode()
    status, data = raw_request(cache_server, method, path, body, Authorization=f"Basic {token}")
    assert status in (400, 404), (status, data)
    assert b"scrypt" not in data and b"root:" not in data
    assert stored_files(cache_server.root) == []
    assert (cache_server.root / "users.json").read_bytes() == users_before


def test_body_over_the_limit_is_refused(tmp_path: Path) -> None:
    server = start_cache_server(tmp_path / "cache", "--max-size", "1K")
    try:
        declared = requests.post(f"{server.url}/shacache", data=b"x" * 2048, auth=server.auth)
        assert declared.status_code == 413
        streamed = requests.post(
            f"{server.url}/shacache", data=iter([b"x" * 600] * 4), auth=server.auth
        )
        assert streamed.status_code == 413
        assert stored_files(server.root) == []
    finally:
        server.stop()


def send_partial_upload(server: RunningCache, declared: int, sent: int) -> socket.socket:
    parts = urlsplit(server.url)
    sock = socket.create_connection((parts.hostname, parts.port))
    import base64

    token = base64.b64encode(f"{server.user}:{server.password}".encode()).decode()
    head = (
        f"POST /shacache HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"y" * sent)
    return sock


@pytest.mark.parametrize(("declared", "sent"), [(3_000_000, 1_500_000), (100_000, 40_000)])
def test_truncated_upload_stores_nothing(
    cache_server: RunningCache, declared: int, sent: int
) -> None:
    sock = send_partial_upload(cache_server, declared=declared, sent=sent)
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 10
    while "broken off" not in cache_server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "broken off" in cache_server.log()
    assert stored_files(cache_server.root) == []
    # The server is still healthy.
    assert requests.get(f"{cache_server.url}/health").json()["status"] == "ok"


def test_killed_server_mid_upload_leaves_no_partial_blob(cache_server: RunningCache) -> None:
    sock = send_partial_upload(cache_server, declared=8_000_000, sent=4_000_000)
    time.sleep(0.5)
    assert list((cache_server.root / "tmp").iterdir()), "the upload should be in progress"
    cache_server.kill()
    sock.close()
    assert list((cache_server.root / "shacache").rglob("*" * 1)) == []
    restarted = start_cache_server(cache_server.root)
    try:
        assert stored_files(restarted.root) == []
        assert "unfinished upload" in restarted.log()
    finally:
        restarted.stop()


def test_concurrent_identical_uploads_store_one_blob(cache_server: RunningCache) -> None:
    data = os.urandom(4 << 20)
    digest = hashlib.sha512(data).hexdigest()

    def upload(_: int) -> tuple[int, str]:
        response = requests.post(f"{cache_server.url}/shacache", data=data, auth=cache_server.auth)
        return response.status_code, response.text

    with ThreadPoolExecutor(8) as pool:
        results = set(pool.map(upload, range(8)))
    assert results == {(201, digest)}
    assert stored_files(cache_server.root) == [
        cache_server.root / "shacache" / digest[:2] / digest[2:4] / digest
    ]


def test_private_cache_needs_credentials_to_download(tmp_path: Path) -> None:
    server = start_cache_server(tmp_path / "cache", "--private")
    try:
        posted = requests.post(f"{server.url}/shacache", data=b"secret", auth=server.auth)
        url = f"{server.url}/shacache/{posted.text}"
        assert requests.get(url).status_code == 401
        assert requests.get(url, auth=server.auth).content == b"secret"
    finally:
        server.stop()


def test_full_disk_answers_507_and_recovers(tmp_path: Path) -> None:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)]
    ).returncode:
        pytest.skip("mounting a tmpfs needs root")
    server = start_cache_server(mount_point / "cache")
    try:
        response = requests.post(f"{server.url}/shacache", data=b"z" * (3 << 20), auth=server.auth)
        assert response.status_code == 507 and "full" in response.text
        assert stored_files(server.root) == []
        small = requests.post(f"{server.url}/shacache", data=b"fits", auth=server.auth)
        assert small.status_code == 201
    finally:
        server.stop()
        subprocess.run(["umount", str(mount_point)], check=True)
