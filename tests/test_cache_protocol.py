"""Wire details of `kiln cache serve`: bodies in several TCP writes, empty blobs, unsigned
entries, the Server header, and answers that do not tell users apart."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from kiln.shacache.client import CacheClient
from kiln.shacache.keys import generate_ed25519_key, sign_metadata
from kiln.shacache.users import CachedChecker, UserDatabase
from kiln.testing.cache import RunningCache, start_cache_server

EMPTY_SHA512 = hashlib.sha512(b"").hexdigest()


def basic(server: RunningCache) -> str:
    return "Basic " + base64.b64encode(f"{server.user}:{server.password}".encode()).decode()


def read_answer(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"\n"):
        piece = sock.recv(65536)
        if not piece:
            break
        answer += piece
    return answer


@pytest.mark.integration
def test_an_entry_sent_in_two_tcp_writes_is_read_whole(server: RunningCache) -> None:
    alice = generate_ed25519_key("alice")
    metadata = json.dumps({"sha512": "1" * 128, "padding": "p" * 30_000})
    body = json.dumps([metadata, sign_metadata(metadata, [alice])]).encode()
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = (
            f"PUT /shadir/pypi:big=1 HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(server)}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:1000])
        time.sleep(0.3)  # the server has read the first part by now
        sock.sendall(body[1000:])
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 201"), answer
    [stored] = requests.get(f"{server.url}/shadir/pypi:big=1").json()
    assert stored[0] == metadata


@pytest.mark.integration
def test_an_entry_over_the_limit_is_refused_with_413(server: RunningCache) -> None:
    body = b'["' + b"x" * 70_000 + b'", ""]'
    response = requests.put(f"{server.url}/shadir/k", data=iter([body]), auth=server.auth)
    assert response.status_code == 413 and "limit" in response.text


@pytest.mark.integration
def test_an_empty_file_is_a_blob(server: RunningCache, tmp_path: Path) -> None:
    posted = requests.post(f"{server.url}/shacache", data=b"", auth=server.auth)
    assert (posted.status_code, posted.text) == (201, EMPTY_SHA512)
    put = requests.put(f"{server.url}/shacache/{EMPTY_SHA512}", data=b"", auth=server.auth)
    assert put.status_code == 201
    got = requests.get(f"{server.url}/shacache/{EMPTY_SHA512}")
    assert (got.status_code, got.content, got.headers["Content-Length"]) == (200, b"", "0")
    assert requests.head(f"{server.url}/shacache/{EMPTY_SHA512}").status_code == 200
    # And through our client, with an entry.
    alice = generate_ed25519_key("alice")
    client = CacheClient.from_url(server.upload_url, signing_keys=[alice], retries=0)
    (tmp_path / "empty").write_bytes(b"")
    assert client.upload(tmp_path / "empty", "pypi:empty=1", {}) == EMPTY_SHA512
    assert client.download(EMPTY_SHA512, tmp_path / "copy").read_bytes() == b""


def entry(sha: str = "1" * 128, signature: str = "") -> str:
    return json.dumps([json.dumps({"sha512": sha}), signature])


@pytest.mark.integration
def test_unsigned_and_untrusted_entries_are_stored_by_default(server: RunningCache) -> None:
    url = f"{server.url}/shadir/pypi:x=1"
    unsigned = requests.put(url, data=entry(), auth=server.auth)
    other = sign_metadata(json.dumps({"sha512": "2" * 128}), [generate_ed25519_key("mallory")])
    untrusted = requests.put(url, data=entry("2" * 128, other), auth=server.auth)
    assert (unsigned.status_code, untrusted.status_code) == (201, 201)
    assert len(requests.get(url).json()) == 2
    # Clients still use only what they trust.
    client = CacheClient.from_url(server.url, upload=False, retries=0)
    assert client.select("pypi:x=1") == []


@pytest.mark.integration
def test_require_signed_refuses_unsigned_entries(tmp_path: Path) -> None:
    server = start_cache_server(tmp_path / "cache", "--require-signed")
    try:
        url = f"{server.url}/shadir/k"
        response = requests.put(url, data=entry(), auth=server.auth)
        assert response.status_code == 403 and "--require-signed" in response.text
        signed = sign_metadata(json.dumps({"sha512": "1" * 128}), [generate_ed25519_key("al")])
        assert requests.put(url, data=entry(signature=signed), auth=server.auth).status_code == 201
    finally:
        server.stop()


@pytest.mark.integration
def test_no_software_banner_in_the_server_header(server: RunningCache) -> None:
    answers = [
        requests.get(f"{server.url}/health"),
        requests.get(f"{server.url}/"),
        requests.get(f"{server.url}/shacache/{'0' * 128}"),
        requests.post(f"{server.url}/shacache", data=b"x"),
    ]
    assert [a.headers.get("Server") for a in answers] == ["kiln"] * 4
    assert all("aiohttp" not in str(a.headers) and "Python" not in str(a.headers) for a in answers)
    # Nothing it serves is HTML (so no HTML security headers are needed).
    assert all("html" not in a.headers.get("Content-Type", "") for a in answers)
    # Nor do the answers that aiohttp writes before the app sees the request.
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(b"NOT HTTP\r\n\r\n")
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.0 400") and b"\r\nServer: kiln\r\n" in answer, answer
    assert b"aiohttp" not in answer


@pytest.mark.integration
def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(server: RunningCache) -> None:
    url = f"{server.url}/shacache"
    wrong = requests.post(url, data=b"x", auth=(server.user, "wrong"))
    unknown = requests.post(url, data=b"x", auth=("nobody", "wrong"))
    for response in (wrong, unknown):
        del response.headers["Date"]
    assert (wrong.status_code, wrong.text, dict(wrong.headers)) == (
        unknown.status_code,
        unknown.text,
        dict(unknown.headers),
    )


@pytest.mark.unit
def test_a_wrong_password_and_an_unknown_user_take_as_long(tmp_path: Path) -> None:
    database = UserDatabase(tmp_path / "users.json")
    database.add("uploader")
    checker = CachedChecker(database)
    samples: dict[str, list[float]] = {"uploader": [], "nobody": []}
    for _ in range(9):  # interleaved, so that a change in the machine's load hits both alike
        for name, seconds in samples.items():
            start = time.perf_counter()
            assert not checker.check(name, "wrong")
            seconds.append(time.perf_counter() - start)
    known, unknown = (statistics.median(samples[name]) for name in ("uploader", "nobody"))
    # Both run one scrypt (the unknown user's against a decoy hash).  Skipping it would make
    # one ~100 times faster; the loose bound leaves room for a busy machine's noise.
    assert 0.5 < known / unknown < 2, (known, unknown)
