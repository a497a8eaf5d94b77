"""Source keys and mirror-free Debian source URLs (no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kiln.buildout import debian_sources
from kiln.buildout.debian_sources import DebianSourceURL
from kiln.buildout.source_download import md5_matches, source_key

pytestmark = pytest.mark.unit


def test_source_key_is_slapos_file_urlmd5() -> None:
    url = "https://example.org/zstd-1.5.4.tar.gz"
    assert source_key(url) == "file-urlmd5:" + hashlib.md5(url.encode()).hexdigest()


def test_debian_source_url_round_trips() -> None:
    url = "debian-source:libzstd=1.5.4+dfsg2-5/libzstd_1.5.4+dfsg2.orig.tar.xz"
    parsed = DebianSourceURL.parse(url)
    assert (parsed.package, parsed.version, parsed.filename) == (
        "libzstd",
        "1.5.4+dfsg2-5",
        "libzstd_1.5.4+dfsg2.orig.tar.xz",
    )
    assert str(parsed) == url
    assert debian_sources.is_debian_source(url)
    assert not debian_sources.is_debian_source("https://example.org/x.tar.gz")


@pytest.mark.parametrize(
    "url",
    ["debian-source:libzstd", "debian-source:/file.tar.xz", "https://x/y", "debian-source:a/b/c"],
)
def test_malformed_debian_source_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        DebianSourceURL.parse(url)


def test_apt_deb_sources_become_deb_src_without_touching_the_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\n"
    )
    (etc / "extra.list").write_text("deb http://mirror.invalid/extra bookworm main\n# comment\n")
    monkeypatch.setattr(debian_sources, "APT_SOURCES_DIRS", (etc,))
    monkeypatch.setattr(debian_sources, "APT_SOURCES_LIST", tmp_path / "missing.list")
    parts = debian_sources._deb_src_config(tmp_path / "state")
    assert "Types: deb-src" in (parts / "debian.sources").read_text()
    assert (
        parts / "extra.list"
    ).read_text() == "deb-src http://mirror.invalid/extra bookworm main\n"
    assert (etc / "debian.sources").read_text().startswith("Types: deb\n")


def test_no_apt_sources_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian_sources, "APT_SOURCES_DIRS", (tmp_path,))
    monkeypatch.setattr(debian_sources, "APT_SOURCES_LIST", tmp_path / "missing.list")
    with pytest.raises(debian_sources.DebianSourceError, match="no apt sources"):
        debian_sources._deb_src_config(tmp_path / "state")


def test_md5_matches(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert md5_matches(path, hashlib.md5(b"abc").hexdigest())
    assert md5_matches(path, None)
    assert not md5_matches(path, "0" * 32)
