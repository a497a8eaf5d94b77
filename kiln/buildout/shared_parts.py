"""SlapOS shared parts (``shared = true`` with ``buildout:shared-part-list``), for the cache.

slapos.recipe's ``Shared`` base class (slapos.recipe.cmmi, slapos.recipe.build) decides the
location of a shared part when the recipe is initialised: ``<shared-root>/<part>/<md5>``,
where the md5 covers the part's options (with ``${:_profile_base_location_}`` put back, and
the locations of the shared parts it uses, which are themselves such paths).  Once built, the
directory holds ``.buildout-shared.json`` and is made read-only; the recipe's ``install``
then returns no path, so that buildout never removes it, and finds it built the next time.

kiln keeps that scheme (it is input-addressed, like a Nix store path): a shared part is
packed from, and restored into, its location under the shared root, which is why binaries
whose RUNPATH names other shared parts are reused unchanged in any software directory.

Two builds on one machine (two releases, or one release into two software directories) may
want the same shared part at once; the recipe starts by removing the location, so each would
destroy the other's half-built part.  :func:`shared_part_lock` serialises them: an
exclusive ``flock`` on ``<shared-root>/.kiln-locks/<part>/<md5>.lock``, held while the part
is restored or installed.  The second build then finds the part installed and uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = ".buildout-shared.json"
# Beside the parts, not among them: `<root>/<part>/` holds only the part's locations.
LOCK_DIRECTORY = ".kiln-locks"


@dataclass(frozen=True)
class SharedLocation:
    """Where a shared part lives: ``root / relative``."""

    root: Path
    relative: str

    @property
    def path(self) -> Path:
        return self.root / self.relative

    @property
    def installed(self) -> bool:
        return (self.path / MARKER).is_file()

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_DIRECTORY / f"{self.relative}.lock"


@contextlib.contextmanager
def shared_part_lock(
    location: SharedLocation, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold the exclusive lock of one shared part; ``on_wait`` is called once if another
    process holds it (the call then blocks until that process releases it or exits: the
    kernel drops a dead process's locks, so a killed build never leaves the part locked)."""
    path = location.lock_file
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def shared_roots(buildout_section: Any) -> list[str]:
    """The directories of ``buildout:shared-part-list``, as the recipes read them."""
    value = buildout_section.get("shared-part-list", "") or ""
    return [line.strip().rstrip("/") for line in value.splitlines() if line.strip()]


def shared_location(recipe: Any) -> SharedLocation | None:
    """The shared location the recipe chose, or None for a part of the software directory.

    The recipe sets ``signature`` only when it installs into a shared root.
    """
    if getattr(recipe, "signature", None) is None:
        return None
    location = Path(str(recipe.location))
    return SharedLocation(location.parent.parent, str(location.relative_to(location.parent.parent)))


def remove_tree(path: Path) -> None:
    """Remove a (possibly read-only, as shared parts are) directory tree or file."""
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.exists():
        return
    for dirpath, _dirnames, _filenames in os.walk(path):
        mode = os.lstat(dirpath).st_mode
        os.chmod(dirpath, stat.S_IMODE(mode) | stat.S_IRWXU)
    shutil.rmtree(path)
