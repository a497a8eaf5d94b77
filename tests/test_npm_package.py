"""`kiln:npm-package` (component/dygraphs): an npm tarball from the registry npm is configured
with, pinned by its integrity hash, through the source cache; seeded for offline sites.

A registry of our own on 127.0.0.1 stands in for npm's (a real HTTP server serving a real
tarball at the registry's path), so the test needs no network and can serve wrong bytes.
"""

from __future__ import annotations

import configparser
import functools
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.buildout.npm_registry import NpmPackageURL, integrity_of
from kiln.software.build import BuildError, build_release, repository_root
from kiln.software.seed import seed_npm_package
from kiln.testing.releases import CacheFixture, start_test_cache

pytestmark = pytest.mark.integration


def component_option(option: str) -> str:
    parser = configparser.RawConfigParser()
    parser.read(repository_root() / "component" / "dygraphs" / "buildout.cfg")
    return parser.get("dygraphs", option).strip()


def test_the_component_pins_what_the_package_lock_pins() -> None:
    lock_path = repository_root() / "kiln" / "wendelin" / "frontend" / "package-lock.json"
    locked = json.loads(lock_path.read_text())["packages"]["node_modules/dygraphs"]
    assert component_option("version") == locked["version"]
    assert component_option("integrity") == locked["integrity"]
    assert "resolved" not in locked  # no registry host in the repository


@pytest.mark.parametrize("url", ["npm:dygraphs", "npm:dygraphs@^2.2", "npm:../x@1.0.0", "x:y@1"])
def test_malformed_npm_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        NpmPackageURL.parse(url)


def test_scoped_packages_have_the_registry_tarball_path() -> None:
    package = NpmPackageURL.parse("npm:@scope/name@1.2.3")
    assert package.tarball_path() == "@scope/name/-/name-1.2.3.tgz"


def npm_tarball(path: Path, script: bytes) -> Path:
    """A package as npm packs it: everything under ``package/``."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (
            ("package/package.json", b'{"name": "dygraphs", "version": "2.2.2"}'),
            ("package/dist/dygraph.min.js", script),
            ("package/dist/dygraph.min.css", b".dygraph-legend{}"),
        ):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return path


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory served as the npm registry npm is configured with (npm_config_registry)."""
    root = tmp_path / "registry"
    (root / "dygraphs" / "-").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{server.server_port}/")
    yield root / "dygraphs" / "-"
    server.shutdown()
    server.server_close()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[CacheFixture]:
    running = start_test_cache(tmp_path / "cache")
    yield running
    running.stop()


def only_dygraphs(tmp_path: Path) -> Path:
    directory = tmp_path / "checkout" / "software" / "dygraphs-only"
    directory.mkdir(parents=True)
    root = repository_root()
    (directory / "software.cfg").write_text(
        "[buildout]\nextends =\n"
        f"  {root}/stack/kiln/buildout.cfg\n  {root}/component/dygraphs/buildout.cfg\n"
        "parts =\n  dygraphs\n"
    )
    return directory


def test_fetched_from_the_configured_registry_and_checked(
    registry: Path, cache: CacheFixture, tmp_path: Path
) -> None:
    tarball = npm_tarball(registry / "dygraphs-2.2.2.tgz", b"/* the real one */")
    pinned = {"dygraphs:integrity": integrity_of(tarball)}
    release = only_dygraphs(tmp_path)
    # Without upload rights: the second build must fetch again, not hit the built part.
    result = build_release(
        release, tmp_path / "software", cache.config(), options=pinned, quiet=True
    )
    assert result.parts["dygraphs"]["outcome"] == "built"
    dist = tmp_path / "software" / "parts" / "dygraphs" / "dist"
    assert (dist / "dygraph.min.js").read_bytes() == b"/* the real one */"

    # Other bytes under the same name and version: refused, nothing left in the part.
    npm_tarball(registry / "dygraphs-2.2.2.tgz", b"/* tampered */")
    with pytest.raises(BuildError) as refused:
        build_release(release, tmp_path / "other", cache.config(), options=pinned, quiet=True)
    assert "the profile pins " + pinned["dygraphs:integrity"] in str(refused.value)
    assert not (tmp_path / "other" / "parts" / "dygraphs").exists()


def test_an_offline_site_builds_from_the_seeded_cache(
    registry: Path, cache: CacheFixture, tmp_path: Path
) -> None:
    tarball = npm_tarball(registry / "dygraphs-2.2.2.tgz", b"/* seeded */")
    seeded = seed_npm_package(cache.client(upload=True), "dygraphs@2.2.2")
    assert seeded.url == "npm:dygraphs@2.2.2"
    tarball.unlink()  # the registry no longer has it: only the cache does
    pinned = {"dygraphs:integrity": integrity_of(cache.blob_path(seeded.sha512))}
    result = build_release(
        only_dygraphs(tmp_path), tmp_path / "software", cache.config(), options=pinned, quiet=True
    )
    assert result.parts["dygraphs"]["outcome"] == "built"
    dist = tmp_path / "software" / "parts" / "dygraphs" / "dist"
    assert (dist / "dygraph.min.js").read_bytes() == b"/* seeded */"
