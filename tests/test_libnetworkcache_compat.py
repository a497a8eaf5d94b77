"""The real slapos.libnetworkcache (0.30, from PyPI) against `kiln cache serve`.

Uploads authenticate with TLS client certificates, as real SlapOS nodes do (the library's
Basic-in-URL path crashes on Python 3).  Entries carry legacy RSA/SHA-1 signatures.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from slapos.libnetworkcache import NetworkcacheClient

from kiln.shacache.client import CacheClient
from kiln.shacache.config import parse_cache_config
from kiln.shacache.keys import (
    TrustList,
    generate_ed25519_key,
    generate_legacy_rsa_key,
    rsa_private_pem,
)
from kiln.testing.cache import RunningCache, start_cache_server
from kiln.testing.cutting_proxy import CuttingProxy

pytestmark = pytest.mark.integration


def kiln(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "kiln", "cache", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@dataclass
class TlsCache:
    server: RunningCache
    directory: Path
    ca: Path
    client_cert: Path
    client_key: Path
    signing_key: Path
    certificate_pem: str

    def legacy_config(self, port: int | None = None) -> dict[str, str]:
        base = f"https://127.0.0.1:{port or self.server.url.rsplit(':', 1)[1]}"
        config = {
            "download-cache-url": f"{base}/shacache",
            "upload-cache-url": f"{base}/shacache",
            "download-dir-url": f"{base}/shadir",
            "upload-dir-url": f"{base}/shadir",
            "signature-private-key-file": str(self.signing_key),
        }
        for where in ("shacache", "shadir"):
            config[f"{where}-ca-file"] = str(self.ca)
            config[f"{where}-cert-file"] = str(self.client_cert)
            config[f"{where}-key-file"] = str(self.client_key)
        return config

    def legacy_client(self, port: int | None = None) -> NetworkcacheClient:
        return NetworkcacheClient(self.legacy_config(port), [self.certificate_pem])


@pytest.fixture
def tls_cache(tmp_path: Path) -> Iterator[TlsCache]:
    root = tmp_path / "cache"
    kiln("servercert", "--root", str(root), "--host", "127.0.0.1", "--out", "tls", cwd=tmp_path)
    kiln("adduser", "node1", "--root", str(root), "--cert", "--out", "client", cwd=tmp_path)
    legacy = generate_legacy_rsa_key("node1-signature")
    (tmp_path / "signature.key").write_text(rsa_private_pem(legacy))
    assert legacy.certificate_pem
    server = start_cache_server(
        root,
        "--tls-cert",
        str(tmp_path / "tls/127.0.0.1.crt"),
        "--tls-key",
        str(tmp_path / "tls/127.0.0.1.key"),
        scheme="https",
        ca_file=str(root / "ca/ca.pem"),
    )
    yield TlsCache(
        server,
        tmp_path,
        tmp_path / "client/ca.pem",
        tmp_path / "client/node1.crt",
        tmp_path / "client/node1.key",
        tmp_path / "signature.key",
        legacy.certificate_pem,
    )
    server.stop()


def test_legacy_client_uploads_selects_and_downloads_with_a_forced_resume(
    tls_cache: TlsCache,
) -> None:
    data = os.urandom(3 << 20)
    digest = hashlib.sha512(data).hexdigest()
    url = "http://example.invalid/zstd-1.5.4.tar.gz"
    key = "file-urlmd5:" + hashlib.md5(url.encode()).hexdigest()
    nc = tls_cache.legacy_client()
    assert nc.upload(io.BytesIO(data), key, url=url) == digest
    # Uploading again is an existence check (GET answers 2xx), then an idempotent entry write.
    assert nc.upload(io.BytesIO(data), key, url=url) == digest
    assert [entry["sha512"] for entry in nc.select(key)] == [digest]

    proxy = CuttingProxy(int(tls_cache.server.url.rsplit(":", 1)[1]), cut_after=1 << 20)
    try:
        through_proxy = tls_cache.legacy_client(proxy.port)
        # Read in pieces, as buildout's shutil.copyfileobj does: the legacy client resumes
        # only between pieces.
        received = io.BytesIO()
        shutil.copyfileobj(through_proxy.download(digest), received)
        downloaded = received.getvalue()
    finally:
        proxy.stop()
    assert proxy.cuts == 1
    assert downloaded == data
    # The access line is written once the answer is sent: the client may finish reading
    # first, so give the log a moment.
    deadline = time.monotonic() + 10
    while '" 206 ' not in tls_cache.server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert '" 206 ' in tls_cache.server.log(), "the second request should have used Range"


def test_legacy_uploads_without_a_client_certificate_are_refused(tls_cache: TlsCache) -> None:
    config = tls_cache.legacy_config()
    # A self-made certificate that the server's CA did not issue.
    other = tls_cache.directory / "other"
    kiln(
        "adduser",
        "intruder",
        "--root",
        str(other),
        "--cert",
        "--out",
        "other",
        cwd=tls_cache.directory,
    )
    for where in ("shacache", "shadir"):
        config[f"{where}-cert-file"] = str(other / "intruder.crt")
        config[f"{where}-key-file"] = str(other / "intruder.key")
    nc = NetworkcacheClient(config, [tls_cache.certificate_pem])
    with pytest.raises(Exception):  # noqa: B017 - the legacy client raises HTTPError or SSLError
        nc.upload(io.BytesIO(b"data"), "pypi:x=1", software="x")
    assert list((tls_cache.server.root / "shacache").rglob("*")) == []


def test_our_client_reads_what_the_legacy_client_wrote(tls_cache: TlsCache, tmp_path: Path) -> None:
    data = b"built by a SlapOS node"
    digest = tls_cache.legacy_client().upload(io.BytesIO(data), "pypi:demo=1.0", software="demo")
    trust = TrustList.from_texts([tls_cache.certificate_pem])
    ours = CacheClient.from_url(
        tls_cache.server.url,
        trust=trust,
        ca_file=str(tls_cache.ca),
        client_cert=(str(tls_cache.client_cert), str(tls_cache.client_key)),
    )
    [entry] = ours.select("pypi:demo=1.0", {"software": "demo"})
    assert entry["sha512"] == digest
    assert ours.download(digest, tmp_path / "out").read_bytes() == data
    # Without that certificate in the trust list, the entry is reported and never used.
    sceptic = CacheClient.from_url(tls_cache.server.url, ca_file=str(tls_cache.ca))
    [report] = sceptic.lookup("pypi:demo=1.0")
    assert not report.trusted and "no certificate is trusted" in report.reason
    assert sceptic.select("pypi:demo=1.0") == []


def test_legacy_client_reads_what_our_client_wrote(tls_cache: TlsCache, tmp_path: Path) -> None:
    artefact = tmp_path / "part.tar.gz"
    artefact.write_bytes(os.urandom(50_000))
    section = {**tls_cache.legacy_config(), "signature-certificate-list": tls_cache.certificate_pem}
    ours = CacheClient.from_config(parse_cache_config(section))
    digest = ours.upload(artefact, "kiln-part:demo", {"part": "demo", "multiarch": "x"})
    [entry] = list(tls_cache.legacy_client().select("kiln-part:demo", {"part": "demo"}))
    assert entry["sha512"] == digest
    assert tls_cache.legacy_client().download(digest).read() == artefact.read_bytes()


def test_legacy_client_skips_entries_it_cannot_verify(tls_cache: TlsCache, tmp_path: Path) -> None:
    """Ed25519-only entries under a key do not break a SlapOS node reading that key."""
    artefact = tmp_path / "part"
    artefact.write_bytes(b"shared part")
    options = {**tls_cache.legacy_config(), "signature-certificate-list": tls_cache.certificate_pem}
    legacy_signed = CacheClient.from_config(parse_cache_config(options))
    modern_signed = CacheClient.from_config(
        parse_cache_config({**options, "signature-private-key-file": ""})
    )
    modern_signed.signing_keys = [generate_ed25519_key("alice")]
    modern_signed.upload(artefact, "kiln-part:mixed", {"by": "alice"})
    legacy_signed.upload(artefact, "kiln-part:mixed", {"by": "node"})
    entries = list(tls_cache.legacy_client().select("kiln-part:mixed"))
    assert [entry["by"] for entry in entries] == ["node"]


def test_legacy_client_uploads_and_downloads_an_empty_file(tls_cache: TlsCache) -> None:
    empty_sha512 = hashlib.sha512(b"").hexdigest()
    nc = tls_cache.legacy_client()
    assert nc.upload(io.BytesIO(b""), "pypi:empty=1", software="empty") == empty_sha512
    [entry] = list(nc.select("pypi:empty=1"))
    assert entry["sha512"] == empty_sha512
    assert nc.download(empty_sha512).read() == b""


def test_a_key_name_of_three_letters_breaks_the_legacy_select_of_the_whole_key(
    tls_cache: TlsCache, tmp_path: Path
) -> None:
    """Why `kiln cache keygen` refuses such names (kiln.shacache.keys.check_legacy_safe_name):
    slapos.libnetworkcache 0.30 base64-decodes `bob:...` as a whole and does not catch the
    error, so it loses the entries it could read under the same key too."""
    artefact = tmp_path / "part"
    artefact.write_bytes(b"shared part")
    options = {**tls_cache.legacy_config(), "signature-certificate-list": tls_cache.certificate_pem}
    legacy_signed = CacheClient.from_config(parse_cache_config(options))
    legacy_signed.upload(artefact, "kiln-part:bob", {"by": "node"})
    assert [e["by"] for e in tls_cache.legacy_client().select("kiln-part:bob")] == ["node"]
    modern_signed = CacheClient.from_config(
        parse_cache_config({**options, "signature-private-key-file": ""})
    )
    modern_signed.signing_keys = [generate_ed25519_key("bob")]
    modern_signed.upload(artefact, "kiln-part:bob", {"by": "bob"})
    with pytest.raises(binascii.Error):
        list(tls_cache.legacy_client().select("kiln-part:bob"))
