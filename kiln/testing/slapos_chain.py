"""The SlapOS-style chain of shared components (kiln/testing/profiles/slapos-chain).

Used by the shared-part tests and the benchmark: the tree is copied wherever a test wants
it (outside the checkout, as a real SlapOS profile tree would be), and each component's
source directory is packed into the tarball its profile downloads.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from pathlib import Path

CHAIN = Path(__file__).parent / "profiles" / "slapos-chain"
COMPONENTS = ("liba", "libb", "hello")
PARTS = ("liba", "libb", "hello", "hello-command")


def _deterministic_tarball(source: Path, dest: Path) -> None:
    """Pack ``source`` as ``<name>/...`` with fixed owners and times: the same bytes on
    every copy, so the tarball's digest in the part signature does not vary."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted([source, *source.rglob("*")]):
            info = tar.gettarinfo(path, str(Path(source.name) / path.relative_to(source)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as content:
                    tar.addfile(info, content)
            else:
                tar.addfile(info)
    with dest.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
        zipped.write(buffer.getvalue())


def copy_chain(dest: Path) -> Path:
    """Copy the profile tree to ``dest``, with its source tarballs; answer the release dir."""
    shutil.copytree(CHAIN, dest)
    for name in COMPONENTS:
        component = dest / "component" / name
        _deterministic_tarball(component / f"{name}-1.0", component / f"{name}-1.0.tar.gz")
    return dest / "software" / "chain"
