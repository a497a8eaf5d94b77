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
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = ".buildout-shared.json"


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
