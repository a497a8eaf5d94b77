"""Seed the source cache, so that builds work where the network source is not reachable.

Sources are stored as SlapOS stores them: the blob in ShaCache, and a signed ShaDir entry
``{"url": URL, "sha512": ...}`` under ``file-urlmd5:<md5(URL)>``.  A profile that downloads
URL (checksum-pinned) then finds it in the cache.

Two ways in:
- Debian source packages: every file of ``apt-get source --download-only PACKAGE=VERSION``,
  under the mirror-free URL ``debian-source:PACKAGE=VERSION/FILE`` the profiles use.  With
  ``from_dir`` the files are taken from a directory instead (fetched elsewhere and carried
  to an offline site);
- npm packages: the tarball of ``NAME@VERSION`` from the registry this machine's npm is
  configured with, under the registry-free URL ``npm:NAME@VERSION`` (``kiln:npm-package``);
- any local file under the URL a profile names.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kiln.buildout import debian_sources, npm_registry
from kiln.buildout.source_download import source_key


@dataclass
class Seeded:
    url: str
    key: str
    sha512: str
    md5: str


def _md5(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "md5").hexdigest()


def seed_file(client, path: Path, url: str) -> Seeded:
    """Upload ``path`` and index it under the cache key of ``url``."""
    md5 = _md5(path)
    sha512 = client.upload(
        path, source_key(url), {"url": url, "filename": path.name, "md5sum": md5}
    )
    return Seeded(url, source_key(url), sha512, md5)


def seed_debian_package(client, spec: str, from_dir: Path | None = None) -> list[Seeded]:
    """Seed every file of Debian source package ``spec`` (``PACKAGE=VERSION``)."""
    package, _, version = spec.partition("=")
    if not version:
        raise ValueError(
            f"{spec!r}: give the exact version (PACKAGE=VERSION, as in the profile's "
            "debian-source: URL), so the cache key matches"
        )
    seeded = []
    with tempfile.TemporaryDirectory(prefix="kiln-seed-") as tmp:
        if from_dir is None:
            files = debian_sources.download_source_package(package, version, Path(tmp))
        else:
            upstream = version.split(":")[-1].rsplit("-", 1)[0]
            files = sorted(
                p for p in from_dir.iterdir() if p.name.startswith(f"{package}_{upstream}")
            )
            if not files:
                raise ValueError(f"no {package}_{upstream}* files in {from_dir}")
        for path in files:
            url = str(debian_sources.DebianSourceURL(package, version, path.name))
            seeded.append(seed_file(client, path, url))
    return seeded


def seed_npm_package(client, spec: str) -> Seeded:
    """Seed the tarball of npm package ``spec`` (``NAME@VERSION``, an exact version)."""
    url = str(npm_registry.NpmPackageURL.parse(f"{npm_registry.SCHEME}:{spec}"))
    with tempfile.TemporaryDirectory(prefix="kiln-seed-") as tmp:
        return seed_file(client, npm_registry.fetch(url, Path(tmp)), url)
