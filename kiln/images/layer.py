"""The layer cache: the root filesystem after the package phase, as a signed ShaCache entry.

Like mkosi's ``Incremental=``, but shared between machines and verified.  The layer's key is a
hash of everything that shapes it: the Debian release and architecture, the package lists of
every element, the content of kiln's elements that run before the save, diskimage-builder's
version, and the Release files of the mirrors (a new archive state is a new layer).  A layer is
restored as diskimage-builder's own debootstrap tarball (``DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE``),
so every later hook runs on top of it as usual.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import requests

KEY_PREFIX = "kiln-layer:"
# Their hooks run after the layer is saved (kiln-layer's install.d/10), so they do not shape
# it: kiln-releases (install.d/55+) and kiln-ec2 (install.d/40), so that the EC2 variant
# restores the appliance's layer.  tests/test_manifest_layer.py checks the hooks' order.
AFTER_LAYER = ("kiln-releases", "kiln-ec2")


@dataclass(frozen=True)
class LayerInputs:
    release: str
    architecture: str
    packages: tuple[str, ...]
    elements: dict[str, str]  # element name -> sha256 of its files
    dib_version: str
    mirror_releases: dict[str, str]  # mirror suite -> sha256 of its Release file

    def key(self) -> str:
        text = json.dumps(self.__dict__, sort_keys=True, default=list)
        return KEY_PREFIX + hashlib.sha256(text.encode()).hexdigest()


def tree_digest(directory: Path) -> str:
    """sha256 over every file's relative path, mode bit x and content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def element_digests(names: Iterable[str], elements_path: Iterable[Path]) -> dict[str, str]:
    roots = list(elements_path)
    result = {}
    for name in names:
        if name in AFTER_LAYER:
            continue
        for root in roots:
            if (root / name).is_dir():
                result[name] = tree_digest(root / name)
                break
    return result


def package_list(element_dirs: Iterable[Path]) -> tuple[str, ...]:
    """Every package named in the elements' package-installs.yaml (top-level keys)."""
    import yaml

    packages: set[str] = set()
    for directory in element_dirs:
        path = directory / "package-installs.yaml"
        if path.is_file():
            packages.update(str(k) for k in (yaml.safe_load(path.read_text()) or {}))
    return tuple(sorted(packages))


def release_file_digest(mirror: str, suite: str, timeout: float = 30) -> str:
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    answer = requests.get(url, timeout=timeout)
    answer.raise_for_status()
    return hashlib.sha256(answer.content).hexdigest()


def find_layer(client, key: str, architecture: str) -> dict | None:
    """The newest trusted layer entry, or None."""
    entries = client.select(key, {"architecture": architecture})
    return entries[0] if entries else None
