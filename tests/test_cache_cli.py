"""`kiln cache` as a user runs it: keys, upload, lookup, download, gc."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kiln.testing.cache import RunningCache
from kiln.testing.cache import cache_command as kiln

pytestmark = pytest.mark.integration


def test_first_start_prints_url_and_where_its_generated_credential_is(
    server: RunningCache,
) -> None:
    banner = server.log()
    credential = server.root / "initial-upload-credential"
    assert (
        server.url in banner and f"upload credential of user 'uploader': in {credential}" in banner
    )
    assert len(server.password) >= 24 and server.password not in banner
    stored = (server.root / "users.json").read_text()
    assert server.password not in stored and "scrypt" in stored
    assert oct((server.root / "users.json").stat().st_mode)[-3:] == "600"


def test_keygen_upload_lookup_download_and_gc(server: RunningCache, tmp_path: Path) -> None:
    keygen = kiln("keygen", "alice", cwd=tmp_path)
    public = (tmp_path / "alice.pub").read_text().strip()
    assert public in keygen.stdout and oct((tmp_path / "alice.key").stat().st_mode)[-3:] == "600"
    assert kiln("keygen", "alice", cwd=tmp_path, ok=False).returncode != 0  # never overwrites

    artefact = tmp_path / "zstd.tar.gz"
    artefact.write_bytes(os.urandom(30_000))
    credentials = {"KILN_CACHE_USER": server.user, "KILN_CACHE_PASSWORD": server.password}
    common = ["--cache", server.url]
    upload = kiln(
        "upload", str(artefact), "--key", "kiln-part:zstd", "--meta", "part=zstd",
        "--sign-with", "alice.key", *common, cwd=tmp_path, env=credentials,
    )  # fmt: skip
    digest = upload.stdout.strip()
    assert len(digest) == 128

    trusted = kiln("lookup", "kiln-part:zstd", "--trust", "alice.pub", *common, cwd=tmp_path)
    assert "trusted: signed by trusted key 'alice'" in trusted.stdout
    untrusted = kiln("lookup", "kiln-part:zstd", *common, cwd=tmp_path)
    assert "UNTRUSTED" in untrusted.stdout and "no trusted keys" in untrusted.stdout

    refused = kiln(
        "download", "--key", "kiln-part:zstd", "-o", "x", *common, cwd=tmp_path, ok=False
    )
    assert refused.returncode != 0 and "kiln cache lookup" in refused.stderr
    kiln(
        "download", "--key", "kiln-part:zstd", "--select", "part=zstd", "--trust", "alice.pub",
        "-o", "copy.tar.gz", *common, cwd=tmp_path,
    )  # fmt: skip
    assert (tmp_path / "copy.tar.gz").read_bytes() == artefact.read_bytes()

    # An upload without an entry is garbage once old enough; the indexed one stays.
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"nobody refers to me")
    orphan_digest = kiln("upload", str(orphan), *common, cwd=tmp_path, env=credentials).stdout
    [orphan_path] = (server.root / "shacache").rglob(orphan_digest.strip())
    old = time.time() - 7200
    os.utime(orphan_path, (old, old))
    dry = kiln("gc", "--root", str(server.root), "--older-than", "1h", "--dry-run", cwd=tmp_path)
    assert "would remove 1 blob(s)" in dry.stdout and orphan_path.exists()
    real = kiln("gc", "--root", str(server.root), "--older-than", "1h", cwd=tmp_path)
    assert "removed 1 blob(s)" in real.stdout and "kept 1 referenced" in real.stdout
    assert not orphan_path.exists()


def test_wrong_input_gets_an_error_naming_it(server: RunningCache, tmp_path: Path) -> None:
    result = kiln(
        "download", "not-a-hash", "-o", "x", "--cache", server.url, cwd=tmp_path, ok=False
    )
    assert "not a sha512" in result.stderr
    result = kiln("serve", "--listen", "nowhere", cwd=tmp_path, ok=False)
    assert "HOST:PORT" in result.stderr
    (tmp_path / "bad.pub").write_text("alice:???\n")
    result = kiln(
        "lookup", "k", "--trust", "bad.pub", "--cache", server.url, cwd=tmp_path, ok=False
    )
    assert "base64" in result.stderr
