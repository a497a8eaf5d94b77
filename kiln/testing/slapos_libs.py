"""The SlapOS-style chain of real libraries (kiln/testing/profiles/slapos-libs).

zlib <- libpng <- freetype (which links libpng and zlib), and zlib <- libxml2: each a
slapos.recipe.cmmi shared part compiled from Debian's source package, linking the others
through RUNPATH.  Cold, it compiles for about two minutes, against a few seconds of
buildout's start-up: the benchmark's measure of what the binary cache saves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

LIBS = Path(__file__).parent / "profiles" / "slapos-libs"
PARTS = ("zlib", "libpng", "freetype", "libxml2")
# The source packages the profiles' debian-source: URLs name (seeded into a test cache with
# kiln.software.seed.seed_debian_package, so that builds read them from the cache).
DEBIAN_SOURCES = (
    "zlib=1:1.2.13.dfsg-1",
    "libpng1.6=1.6.39-2+deb12u5",
    "freetype=2.12.1+dfsg-5+deb12u4",
    "libxml2=2.9.14+dfsg-1.3~deb12u4",
)


def copy_libs(dest: Path) -> Path:
    """Copy the profile tree to ``dest`` (outside the checkout, as a user's profiles would
    be); answer the release directory."""
    shutil.copytree(LIBS, dest)
    return dest / "software" / "libs"
