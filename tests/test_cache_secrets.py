"""Secrets of `kiln cache`: never in logs, never in argv, never readable by other users;
and key names that the legacy client can read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import requests

from kiln.testing.cache import RunningCache, start_cache_server
from kiln.testing.cache import cache_command as kiln


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.integration
def test_the_first_credential_is_in_a_private_file_not_in_the_log(server: RunningCache) -> None:
    credential = server.root / "initial-upload-credential"
    assert mode(credential) == 0o600
    assert f"KILN_CACHE_PASSWORD={server.password}" in credential.read_text()
    assert len(server.password) >= 24 and server.password not in server.log()
    assert str(credential) in server.log()
    # It works, and a restart neither makes another user nor prints anything secret.
    assert requests.post(f"{server.url}/shacache", data=b"x", auth=server.auth).status_code == 201
    server.stop()
    again = start_cache_server(server.root)
    try:
        assert again.password == server.password  # the same file, untouched
        assert server.password not in again.log()
    finally:
        again.stop()


@pytest.mark.integration
def test_adduser_writes_a_password_file_on_request(tmp_path: Path) -> None:
    result = kiln(
        "adduser", "ci", "--root", "cache", "--password-file", "ci.credential", cwd=tmp_path
    )
    text = (tmp_path / "ci.credential").read_text()
    assert mode(tmp_path / "ci.credential") == 0o600 and "KILN_CACHE_USER=ci" in text
    password = text.split("KILN_CACHE_PASSWORD=")[1].strip()
    assert password not in result.stdout
    again = kiln(
        "adduser",
        "ci2",
        "--root",
        "cache",
        "--password-file",
        "ci.credential",
        cwd=tmp_path,
        ok=False,
    )
    assert again.returncode != 0 and "exists" in again.stderr


@pytest.mark.integration
def test_nothing_the_server_writes_is_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0o022)  # what a login shell typically has
    try:
        server = start_cache_server(tmp_path / "cache")
    finally:
        os.umask(old)
    try:
        digest = requests.post(f"{server.url}/shacache", data=b"blob", auth=server.auth).text
        entry = f'["{{\\"sha512\\": \\"{digest}\\"}}", ""]'
        assert (
            requests.put(f"{server.url}/shadir/pypi:x=1", data=entry, auth=server.auth).status_code
            == 201
        )
    finally:
        server.stop()
    kiln(
        "servercert",
        "--root",
        str(server.root),
        "--host",
        "127.0.0.1",
        "--out",
        "tls",
        cwd=tmp_path,
    )
    made = list(server.root.rglob("*"))  # the root itself was made by this test
    assert any(p.name == digest for p in made) and any(p.name == "ca.key" for p in made)
    readable = [f"{p} {oct(mode(p))}" for p in made if mode(p) & 0o077]
    assert readable == []


@pytest.mark.integration
def test_a_password_in_a_url_flag_is_refused(server: RunningCache, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    result = kiln("upload", "f", "--cache", server.upload_url, cwd=tmp_path, ok=False)
    assert result.returncode == 2
    assert "KILN_CACHE_PASSWORD" in result.stderr and "--config" in result.stderr
    assert server.password not in result.stderr + result.stdout
    # The environment and a [networkcache] file (SlapOS's format) still carry credentials.
    env = {"KILN_CACHE_USER": server.user, "KILN_CACHE_PASSWORD": server.password}
    kiln("upload", "f", "--cache", server.url, cwd=tmp_path, env=env)
    (tmp_path / "slapos.cfg").write_text(
        "[networkcache]\n"
        f"download-cache-url = {server.url}/shacache\ndownload-dir-url = {server.url}/shadir\n"
        f"upload-cache-url = {server.upload_url}/shacache\n"
        f"upload-dir-url = {server.upload_url}/shadir\n"
    )
    (tmp_path / "g").write_bytes(b"other data")
    kiln("upload", "g", "--config", "slapos.cfg", cwd=tmp_path)


@pytest.mark.integration
def test_lookup_of_a_missing_key_exits_1_naming_it(server: RunningCache, tmp_path: Path) -> None:
    for extra in ((), ("--json",)):
        result = kiln(
            "lookup", "pypi:nothing=1", *extra, "--cache", server.url, cwd=tmp_path, ok=False
        )
        assert result.returncode == 1 and "pypi:nothing=1" in result.stderr


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "safe"),
    [("bob", False), ("builder", False), ("abcdefghijk", False), ("a.b-c_d-e_f-g", False),
     ("alice", True), ("al", True), ("abcd", True), ("bob1", True), ("x_y", True)],
)  # fmt: skip
def test_key_names_the_legacy_client_cannot_decode_are_refused(name: str, safe: bool) -> None:
    from kiln.shacache.keys import KeyError_, check_legacy_safe_name

    if safe:
        assert check_legacy_safe_name(name) == name
    else:
        with pytest.raises(KeyError_, match=r"slapos\.libnetworkcache"):
            check_legacy_safe_name(name)


@pytest.mark.integration
def test_keygen_refuses_such_names_unless_told(tmp_path: Path) -> None:
    refused = kiln("keygen", "bob", cwd=tmp_path, ok=False)
    assert refused.returncode == 1 and "--slapos-incompatible" in refused.stderr
    assert not (tmp_path / "bob.key").exists()
    kiln("keygen", "bob", "--slapos-incompatible", cwd=tmp_path)
    assert (tmp_path / "bob.key").exists()
