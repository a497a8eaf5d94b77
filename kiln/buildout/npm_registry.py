"""Fetch a pinned npm package's tarball from the registry npm itself is configured with.

Profiles name a package with a registry-free URL::

    npm:dygraphs@2.2.2

so that the URL (and the source-cache key ``file-urlmd5:<md5(url)>`` derived from it) is the
same on every site, while the bytes come from the registry this machine's npm uses (read
at build time from ``npm config get registry``, or from ``npm_config_registry`` and
``~/.npmrc`` where npm is not installed). No registry host is ever written into the
repository. The bytes are checked against the integrity hash the profile pins (the one in
the package-lock), by the recipe that asked for them (``kiln:npm-package``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

SCHEME = "npm"
# npm's own rule for names: lower case, URL-safe, an optional @scope/.
_NAME = re.compile(r"^(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*\Z")
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?\Z")


class NpmRegistryError(Exception):
    """No registry is configured, or it did not give the tarball."""


@dataclass(frozen=True)
class NpmPackageURL:
    name: str
    version: str

    @classmethod
    def parse(cls, url: str) -> NpmPackageURL:
        if not url.startswith(f"{SCHEME}:"):
            raise ValueError(f"not an {SCHEME}: URL: {url}")
        name, _, version = url[len(SCHEME) + 1 :].rpartition("@")
        if not _NAME.match(name) or not _VERSION.match(version):
            raise ValueError(f"expected {SCHEME}:NAME@VERSION (an exact version), got {url}")
        return cls(name, version)

    def __str__(self) -> str:
        return f"{SCHEME}:{self.name}@{self.version}"

    def tarball_path(self) -> str:
        """The tarball's path under the registry (``name/-/basename-version.tgz``)."""
        basename = self.name.rpartition("/")[2]
        return f"{self.name}/-/{basename}-{self.version}.tgz"


def is_npm_package(url: str) -> bool:
    return url.startswith(f"{SCHEME}:")


def configured_registry() -> str:
    """The registry URL from npm's configuration on this machine."""
    npm = shutil.which("npm")
    if npm is not None:
        found = subprocess.run(
            [npm, "config", "get", "registry"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found.startswith(("http://", "https://")):
            return found
    for variable in ("npm_config_registry", "NPM_CONFIG_REGISTRY"):
        if value := os.environ.get(variable, "").strip():
            return value
    npmrc = Path(os.environ.get("NPM_CONFIG_USERCONFIG") or Path.home() / ".npmrc")
    if npmrc.is_file():
        for line in npmrc.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "registry" and value.strip():
                return value.strip()
    raise NpmRegistryError(
        "no npm registry is configured: install npm (`npm config get registry`), or set "
        "npm_config_registry, or a `registry=` line in ~/.npmrc"
    )


def fetch(url: str, workdir: Path, registry: str | None = None) -> Path:
    """Download the tarball ``url`` names into ``workdir``; its path."""
    package = NpmPackageURL.parse(url)
    base = (registry or configured_registry()).rstrip("/")
    source = f"{base}/{package.tarball_path()}"
    target = workdir / Path(package.tarball_path()).name
    try:
        with requests.get(source, stream=True, timeout=60) as response:
            response.raise_for_status()
            with target.open("wb") as out:
                for piece in response.iter_content(1 << 20):
                    out.write(piece)
    except requests.RequestException as error:
        raise NpmRegistryError(f"{package}: {error}") from error
    return target


def integrity_of(path: Path, algorithm: str = "sha512") -> str:
    """The Subresource Integrity string of a file, as package-lock.json writes it."""
    with path.open("rb") as stream:
        digest = hashlib.file_digest(stream, algorithm).digest()
    return f"{algorithm}-{base64.b64encode(digest).decode()}"
