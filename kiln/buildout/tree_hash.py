"""Pin a source archive by the content of its unpacked tree, not by the bytes of the archive.

Upstream tag archives (GitHub's ``archive/refs/tags/vX.tar.gz``) are generated on request:
their compression and metadata change over time, so an md5 of the archive breaks while the
source stays the same.  Nix's ``fetchzip`` pins the unpacked tree instead; so do we.

The tree hash covers, for every entry below the archive's single top-level directory (its
name is left out, as fetchzip does), sorted by path: the kind (directory, file, symlink),
the path, whether a file is executable, the sha256 of its bytes, and a symlink's target.
Timestamps, owners, permissions other than the executable bit, the compression and the
archive format are left out.  It is written ``sha256-<base64>``, the SRI form Nix prints.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path

from kiln.buildout.part_archive import ArchiveError, check_member

PREFIX = "sha256-"


class TreeHashError(Exception):
    """The archive cannot be unpacked safely, or its tree is not the pinned one."""


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").digest()


def tree_hash(root: Path) -> str:
    """The tree hash of the directory ``root`` (its own name is not part of it)."""
    digest = hashlib.sha256(b"kiln-tree-hash-v1\0")
    entries: list[tuple[bytes, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames + filenames:
            path = base / name
            entries.append((os.fsencode(path.relative_to(root)), path))
    for relative, path in sorted(entries):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            digest.update(b"l\0" + relative + b"\0" + os.fsencode(os.readlink(path)) + b"\0")
        elif stat.S_ISDIR(mode):
            digest.update(b"d\0" + relative + b"\0")
        elif stat.S_ISREG(mode):
            kind = b"x" if mode & stat.S_IXUSR else b"f"
            digest.update(kind + b"\0" + relative + b"\0" + _file_digest(path))
        else:
            raise TreeHashError(f"{relative.decode(errors='replace')}: not a file, link or dir")
    return PREFIX + base64.b64encode(digest.digest()).decode()


def unpack(archive: Path, destination: Path) -> Path:
    """Unpack ``archive`` into ``destination`` (created) and answer its top-level directory.

    Extraction uses tarfile's ``data`` filter: no absolute paths, no ``..``, no links out of
    the tree, no devices, no set-uid bits.  An archive without exactly one top-level
    directory is unpacked as is and ``destination`` itself is answered.
    """
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, filter="data")
            else:
                # Debian 12's python3.11 (3.11.2, inside images) predates extraction filters:
                # every member is vetted as a part archive's is, then extracted.
                seen: set[str] = set()
                for member in tar:
                    check_member(member, destination, seen)
                    tar.extract(member, destination)
    except (tarfile.TarError, OSError, ArchiveError) as error:
        raise TreeHashError(f"{archive.name}: cannot be unpacked safely: {error}") from error
    children = list(destination.iterdir())
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        return children[0]
    return destination


def archive_tree_hash(archive: Path) -> str:
    """The tree hash of an archive's content (unpacked in a temporary directory)."""
    with tempfile.TemporaryDirectory(prefix="kiln-tree-") as tmp:
        return tree_hash(unpack(archive, Path(tmp)))


def unpack_verified(archive: Path, destination: Path, expected: str, what: str) -> str:
    """Unpack ``archive``'s tree into ``destination`` (replaced) if its hash is ``expected``.

    ``what`` names the source in the error (its URL).  Answers the hash.  On a mismatch
    nothing is left at ``destination``.
    """
    if not expected.startswith(PREFIX):
        raise TreeHashError(f"tree hash {expected!r} for {what}: write sha256-<base64>")
    staging = destination.with_name(destination.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        top = unpack(archive, staging)
        found = tree_hash(top)
        if found != expected:
            raise TreeHashError(
                f"{what}: the unpacked tree hashes to {found}, but the profile pins {expected}. "
                "The archive is not the pinned source: refused."
            )
        shutil.rmtree(destination, ignore_errors=True)
        top.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m kiln.buildout.tree_hash ARCHIVE...``: print each archive's tree hash."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m kiln.buildout.tree_hash ARCHIVE...", file=sys.stderr)
        return 2
    for path in paths:
        try:
            print(f"{archive_tree_hash(Path(path))}  {path}")
        except (TreeHashError, OSError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
