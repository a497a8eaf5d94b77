"""Fetch Debian source files through the machine's own apt configuration.

Profiles name a Debian source file with a mirror-free URL::

    debian-source:libzstd=1.5.4+dfsg2-5/libzstd_1.5.4+dfsg2.orig.tar.xz

so that the URL (and the cache key ``file-urlmd5:<md5(url)>`` derived from it) is the same on
every site, while the bytes come from whatever mirror this machine's apt is configured with.
No registry host is ever written into the repository.

apt only fetches sources with ``deb-src`` lines.  Rather than edit the system's apt
configuration, we copy its ``deb`` sources as ``deb-src`` into a private directory and run
``apt-get update``/``apt-get source --download-only`` against that (as root or not).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

SCHEME = "debian-source"
APT_SOURCES_DIRS = (Path("/etc/apt/sources.list.d"),)
APT_SOURCES_LIST = Path("/etc/apt/sources.list")


class DebianSourceError(Exception):
    """apt could not provide the requested source file."""


@dataclass(frozen=True)
class DebianSourceURL:
    package: str
    version: str | None
    filename: str

    @classmethod
    def parse(cls, url: str) -> DebianSourceURL:
        parsed = urlparse(url)
        if parsed.scheme != SCHEME:
            raise ValueError(f"not a {SCHEME}: URL: {url}")
        spec, _, filename = parsed.path.partition("/")
        package, _, version = spec.partition("=")
        if not package or not filename or "/" in filename:
            raise ValueError(f"expected {SCHEME}:PACKAGE[=VERSION]/FILE, got {url}")
        return cls(package, version or None, filename)

    def __str__(self) -> str:
        spec = f"{self.package}={self.version}" if self.version else self.package
        return f"{SCHEME}:{spec}/{self.filename}"


def is_debian_source(url: str) -> bool:
    return url.startswith(f"{SCHEME}:")


def _deb_src_config(state: Path) -> Path:
    """Write the machine's `deb` sources as `deb-src` into ``state``; return its parts dir."""
    parts = state / "sources.list.d"
    parts.mkdir(parents=True)
    written = 0
    for directory in APT_SOURCES_DIRS:
        for source in sorted(directory.glob("*.sources")):
            text = source.read_text()
            text = re.sub(r"(?m)^Types:.*$", "Types: deb-src", text)
            (parts / source.name).write_text(text)
            written += 1
        for source in sorted(directory.glob("*.list")):
            lines = [
                re.sub(r"^deb(\s)", r"deb-src\1", line)
                for line in source.read_text().splitlines()
                if line.startswith("deb ")
            ]
            (parts / source.name).write_text("\n".join(lines) + "\n")
            written += 1
    if APT_SOURCES_LIST.is_file():
        lines = [
            re.sub(r"^deb(\s)", r"deb-src\1", line)
            for line in APT_SOURCES_LIST.read_text().splitlines()
            if line.startswith("deb ")
        ]
        (parts / "sources.list.list").write_text("\n".join(lines) + "\n")
        written += 1
    if not written:
        raise DebianSourceError("no apt sources configured on this machine (/etc/apt)")
    return parts


def _apt_options(state: Path, parts: Path) -> list[str]:
    return [
        "-o",
        "Dir::Etc::SourceList=/dev/null",
        "-o",
        f"Dir::Etc::SourceParts={parts}",
        "-o",
        f"Dir::State::Lists={state / 'lists'}",
        "-o",
        f"Dir::Cache={state / 'cache'}",
        "-o",
        "APT::Sandbox::User=root",
        "-q",
    ]


def download_source_package(package: str, version: str | None, dest: Path) -> list[Path]:
    """`apt-get source --download-only PACKAGE[=VERSION]` into ``dest``; return the files."""
    if shutil.which("apt-get") is None:
        raise DebianSourceError("apt-get is not installed: cannot fetch Debian sources")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln-apt-") as tmp:
        state = Path(tmp)
        (state / "lists" / "partial").mkdir(parents=True)
        (state / "cache").mkdir()
        parts = _deb_src_config(state)
        options = _apt_options(state, parts)
        before = set(dest.iterdir())
        spec = f"{package}={version}" if version else package
        for command in (
            ["apt-get", *options, "update"],
            ["apt-get", *options, "source", "--download-only", spec],
        ):
            result = subprocess.run(command, cwd=dest, capture_output=True, text=True)
            if result.returncode != 0:
                raise DebianSourceError(
                    f"`{' '.join(command[:1] + command[-2:])}` failed: "
                    f"{(result.stderr or result.stdout).strip()[-800:]}"
                )
    return sorted(set(dest.iterdir()) - before) or sorted(dest.glob(f"{package}_*"))


def fetch(url: str, dest_dir: Path) -> Path:
    """Fetch the file a `debian-source:` URL names into ``dest_dir``; return its path."""
    source = DebianSourceURL.parse(url)
    download_source_package(source.package, source.version, dest_dir)
    path = dest_dir / source.filename
    if not path.is_file():
        raise DebianSourceError(
            f"apt fetched {source.package} but not {source.filename} "
            f"(found: {', '.join(p.name for p in dest_dir.iterdir())})"
        )
    return path
