"""``${:_profile_base_location_}`` on upstream zc.buildout, as slapos.buildout provides it.

SlapOS component profiles name files next to them (patches, hooks, templates) as
``${:_profile_base_location_}/file.patch``: the directory (or URL) of the profile file that
wrote the option.  Upstream zc.buildout has no such option and fails with `Referenced option
does not exist`.  The extension runs before any part section is read, so it rewrites the raw
options in place:

- in every option value, ``${:_profile_base_location_}`` becomes the directory of the file
  that set that value (buildout's annotations record it), so an option inherited from a
  component keeps pointing next to the component even when a release overrides the section;
- every section read from a profile gets ``_profile_base_location_``: the directory of the
  file that defined its ``recipe`` (else of its last option), which slapos.recipe.cmmi uses to
  keep that directory out of a shared part's hash.
"""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

OPTION = "_profile_base_location_"
REFERENCE = "${:" + OPTION + "}"


def _base_of(source: str) -> str | None:
    """The directory of a profile file or URL; None for buildout's own defaults."""
    if not source or source in ("DEFAULT_VALUE", "COMPUTED_VALUE", "COMMAND_LINE_VALUE"):
        return None
    if "://" in source:
        # buildout joins `extends` URLs as it joins paths (`.../software/x/../../component/y`):
        # normalised, the same file gives the same base however it was reached.
        url = urlsplit(source)
        return urlunsplit(url._replace(path=posixpath.dirname(posixpath.normpath(url.path))))
    if not os.path.isabs(source):
        return None
    # buildout records `extends` paths as joined (`.../software/x/../../component/y`).
    return os.path.dirname(os.path.normpath(source))


def _value_source(sectionkey: Any) -> str | None:
    """Where a value was written: the latest history entry that mentions the reference."""
    for item in reversed(sectionkey.history):
        if REFERENCE in str(item.value):
            return item.source
    return sectionkey.source


def apply_profile_base_location(buildout: Any) -> list[Path]:
    """Expand the option in ``buildout._raw``; answer the local profile directories seen."""
    directories: set[str] = set()
    for section, keys in buildout._annotated.items():
        raw = buildout._raw.get(section)
        if raw is None or section in buildout._data:
            continue  # already initialised (the [buildout] section): too late, and not needed
        bases: list[str] = []
        for key, sectionkey in keys.items():
            base = _base_of(sectionkey.source)
            if base is not None:
                bases.append(base)
                if "://" not in base:
                    directories.add(base)
            value = raw.get(key)
            if isinstance(value, str) and REFERENCE in value:
                where = _base_of(_value_source(sectionkey) or "")
                if where is None:
                    raise _user_error(section, key)
                raw[key] = value.replace(REFERENCE, where)
        if not bases or OPTION in raw:
            continue
        recipe_key = keys.get("recipe")
        recipe_base = _base_of(recipe_key.source) if recipe_key is not None else None
        raw[OPTION] = recipe_base or Counter(bases).most_common(1)[0][0]
    return sorted(Path(d) for d in directories)


def _user_error(section: str, key: str) -> Exception:
    import zc.buildout

    return zc.buildout.UserError(
        f"[{section}] {key} uses {REFERENCE} but was not read from a profile file "
        "(command line or default): give the path instead"
    )
