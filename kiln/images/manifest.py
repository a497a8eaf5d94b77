"""The manifest beside every image: what went into it, to compare two bakes and audit one.

Template hash, every Debian package with its version, every part of every release with its
signature and cache outcome, the layer, and the sha512 of each output.  Two bakes with the
same inputs have the same ``packages`` and ``parts``; ``identity()`` is what must match.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SUFFIX = ".manifest.json"


def sha512_file(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_packages(path: Path) -> dict[str, str]:
    """dpkg-query's ``name<TAB>version<TAB>arch`` lines -> {name[:arch]: version}."""
    packages = {}
    for line in path.read_text().splitlines():
        name, version, architecture = [*line.split("\t"), "", ""][:3]
        if name:
            key = name if architecture in ("", "all", "amd64") else f"{name}:{architecture}"
            packages[key] = version
    return dict(sorted(packages.items()))


def read_parts(directory: Path) -> dict[str, dict[str, dict[str, str]]]:
    """Per release, per part: its signature and cache outcome (from the build reports)."""
    result: dict[str, dict[str, dict[str, str]]] = {}
    for report in sorted(directory.glob("*.json")):
        parts = json.loads(report.read_text()).get("parts", {})
        result[report.stem] = {
            name: {"signature": part.get("signature", ""), "outcome": part.get("outcome", "")}
            for name, part in sorted(parts.items())
        }
    return result


def build_manifest(
    *,
    template_name: str,
    template_digest: str,
    report_dir: Path,
    outputs: list[Path],
    layer: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "template": {"name": template_name, "sha256": template_digest},
        "packages": read_packages(report_dir / "packages.tsv"),
        "parts": read_parts(report_dir / "parts"),
        "layer": layer,
        "outputs": {p.name: {"sha512": sha512_file(p), "bytes": p.stat().st_size} for p in outputs},
        **extra,
    }


def identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What two bakes with the same inputs share: packages and part signatures."""
    return {
        "template": manifest["template"]["sha256"],
        "packages": manifest["packages"],
        "parts": {
            release: {name: part["signature"] for name, part in parts.items()}
            for release, parts in manifest["parts"].items()
        },
    }


def write_manifest(image: Path, manifest: dict[str, Any]) -> Path:
    path = manifest_path(image)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def manifest_path(image: Path) -> Path:
    return image.with_name(image.name.split(".")[0] + SUFFIX)
