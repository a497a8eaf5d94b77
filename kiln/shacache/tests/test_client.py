"""The client library against a real server: trust, verification, resume and retries."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from kiln.shacache.client import CacheClient, CacheError, partial_path
from kiln.shacache.keys import Ed25519SigningKey, TrustList, generate_ed25519_key
from kiln.testing.cache import RunningCache
from kiln.testing.cutting_proxy import CuttingProxy

pytestmark = pytest.mark.integration


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_upload_select_download_round_trip(client: CacheClient, tmp_path: Path) -> None:
    source = tmp_path / "part.tar.gz"
    source.write_bytes(os.urandom(200_000))
    digest = client.upload(source, "kiln-part:zstd", {"part": "zstd", "multiarch": "x86_64"})
    client.upload(source, "kiln-part:zstd", {"part": "zstd", "multiarch": "aarch64"})
    newest, older = client.select("kiln-part:zstd")
    assert (newest["multiarch"], older["multiarch"]) == ("aarch64", "x86_64")
    [x86] = client.select("kiln-part:zstd", {"multiarch": "x86_64"})
    assert x86["sha512"] == digest
    out = client.download(digest, tmp_path / "out" / "part.tar.gz")
    assert out.read_bytes() == source.read_bytes()


def test_untrusted_and_unsigned_entries_are_never_used(
    client: CacheClient, cache_server: RunningCache, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"payload")
    mallory = generate_ed25519_key("mallory")
    intruder = CacheClient.from_url(cache_server.upload_url, signing_keys=[mallory])
    intruder.upload(source, "pypi:demo=1", {"by": "mallory"})
    reports = client.lookup("pypi:demo=1")
    assert [(r.trusted, r.metadata["by"]) for r in reports] == [(False, "mallory")]
    assert "not a trusted key" in reports[0].reason
    assert client.select("pypi:demo=1") == []


def test_signing_is_required_before_anything_is_sent(
    cache_server: RunningCache, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"payload")
    unsigned = CacheClient.from_url(cache_server.upload_url)
    with pytest.raises(CacheError, match="no signing key"):
        unsigned.upload(source, "pypi:demo=1", {})
    assert not any((cache_server.root / "shacache").rglob("*" * 1))


def test_tampered_blob_is_refused_and_not_written(
    client: CacheClient, cache_server: RunningCache, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(os.urandom(10_000))
    digest = client.upload(source, None, {})
    [stored] = (cache_server.root / "shacache").rglob(digest)
    stored.write_bytes(b"evil" + stored.read_bytes()[4:])
    with pytest.raises(CacheError, match="corrupt"):
        client.download(digest, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_broken_download_resumes_with_range(
    client: CacheClient, cache_server: RunningCache, tmp_path: Path, alice: Ed25519SigningKey
) -> None:
    source = tmp_path / "big"
    source.write_bytes(os.urandom(3 << 20))
    digest = client.upload(source, None, {})
    proxy = CuttingProxy(port_of(cache_server.url), cut_after=1 << 20)
    try:
        through_proxy = CacheClient.from_url(f"http://127.0.0.1:{proxy.port}")
        through_proxy.download(digest, tmp_path / "copy")
    finally:
        proxy.stop()
    assert proxy.cuts == 1
    assert hashlib.sha512((tmp_path / "copy").read_bytes()).hexdigest() == digest
    assert '" 206 ' in cache_server.log()


def test_download_resumes_from_the_partial_file_an_earlier_call_kept(
    client: CacheClient, cache_server: RunningCache, tmp_path: Path
) -> None:
    source = tmp_path / "big"
    source.write_bytes(os.urandom(2 << 20))
    digest = client.upload(source, None, {})
    dest = tmp_path / "out" / "copy"
    dest.parent.mkdir()
    kept = 1_500_000
    partial_path(dest, digest).write_bytes(source.read_bytes()[:kept])  # an interrupted pull
    proxy = CuttingProxy(port_of(cache_server.url), cut_after=None)
    try:
        CacheClient.from_url(proxy.url, upload=False).download(digest, dest, resume=True)
    finally:
        proxy.stop()
    assert dest.read_bytes() == source.read_bytes()
    assert proxy.answered < (2 << 20) - kept + 4096  # the rest and the headers only
    assert not partial_path(dest, digest).exists()


def test_a_bad_or_too_long_partial_file_is_never_used(client: CacheClient, tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(os.urandom(300_000))
    digest = client.upload(source, None, {})
    dest = tmp_path / "copy"
    partial_path(dest, digest).write_bytes(b"x" * 1000)  # not a prefix of the blob
    with pytest.raises(CacheError, match="is corrupt"):
        client.download(digest, dest, resume=True)
    assert not dest.exists() and not partial_path(dest, digest).exists()
    partial_path(dest, digest).write_bytes(source.read_bytes() + b"more")  # 416: start over
    assert client.download(digest, dest, resume=True).read_bytes() == source.read_bytes()


class FlakyFront(BaseHTTPRequestHandler):
    """Answers 503 to the first requests, then forwards to the real server."""

    failures_left = 2
    upstream = ""

    def do_GET(self) -> None:
        if FlakyFront.failures_left > 0:
            FlakyFront.failures_left -= 1
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        answer = requests.get(FlakyFront.upstream + self.path)
        self.send_response(answer.status_code)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_front(cache_server: RunningCache) -> Iterator[str]:
    FlakyFront.failures_left, FlakyFront.upstream = 2, cache_server.url
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyFront)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_5xx_answers_are_retried_with_backoff(
    client: CacheClient, flaky_front: str, tmp_path: Path, alice: Ed25519SigningKey
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"retry me")
    client.upload(source, "pypi:retry=1", {"n": "1"})
    reader = CacheClient.from_url(flaky_front, trust=TrustList.from_texts([alice.public_text]))
    assert [e["n"] for e in reader.select("pypi:retry=1")] == ["1"]
    assert FlakyFront.failures_left == 0


def test_unreachable_cache_gives_a_clear_error() -> None:
    client = CacheClient.from_url("http://127.0.0.1:9", retries=1)
    with pytest.raises(CacheError, match=r"cannot reach http://127.0.0.1:9/shadir/k.*2 tries"):
        client.select("k")


def test_credentials_never_appear_in_errors(cache_server: RunningCache) -> None:
    wrong = cache_server.upload_url.replace(cache_server.password, "s3cret-wrong")
    client = CacheClient.from_url(wrong, signing_keys=[generate_ed25519_key("a")])
    with pytest.raises(CacheError) as raised:
        client.index("k", {"sha512": "0" * 128})
    assert "401" in str(raised.value) and "s3cret-wrong" not in str(raised.value)
