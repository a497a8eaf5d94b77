"""Recipes for software run from its source tree on the machine's interpreter (fluentd on Ruby).

``kiln:source-tree`` downloads an archive (through the source cache, like every download of
the build) and unpacks it into the part, refusing it unless its unpacked tree has the
pinned hash (:mod:`kiln.buildout.tree_hash`).  So the upstream tag archive and a copy packed
elsewhere (another compressor, another date) both verify, and anything else is refused.

``kiln:require-ruby`` checks that Ruby and the libraries a program needs are installed,
and names the ``apt-get install`` line that adds what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import zc.buildout
import zc.buildout.download

from kiln.buildout.tree_hash import TreeHashError, unpack_verified

Options = Any  # zc.buildout.buildout.Options


class SourceTree:
    """A source archive unpacked into the part, pinned by its tree hash.

    Options:
      url        where the archive is downloaded from (cache key file-urlmd5:<md5(url)>)
      tree-hash  ``sha256-<base64>`` of the unpacked tree; see kiln.buildout.tree_hash
                 (``python -m kiln.buildout.tree_hash FILE`` prints an archive's)
    Sets ``location`` (the unpacked top-level directory).
    """

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        self.name = name
        self.buildout = buildout
        self.options = options
        for required in ("url", "tree-hash"):
            if not options.get(required, "").strip():
                raise zc.buildout.UserError(f"[{name}] option {required} is required")
        options["location"] = os.path.join(buildout["buildout"]["parts-directory"], name)

    def install(self) -> list[str]:
        url = self.options["url"].strip()
        download = zc.buildout.download.Download(self.buildout["buildout"], hash_name=True)
        # No md5sum: the bytes of a regenerated archive change; its tree must not.
        path, is_temp = download(url)
        try:
            unpack_verified(
                Path(path), Path(self.options["location"]), self.options["tree-hash"].strip(), url
            )
        except TreeHashError as error:
            raise zc.buildout.UserError(f"[{self.name}] {error}") from error
        finally:
            if is_temp:
                os.unlink(path)
        return [self.options["location"]]

    def update(self) -> None:
        return None


def _pairs(value: str) -> list[tuple[str, str]]:
    """Lines of ``library debian-package`` -> pairs (the package defaults to the library)."""
    pairs = []
    for line in value.splitlines():
        words = line.split()
        if words:
            pairs.append((words[0], words[1] if len(words) > 1 else words[0]))
    return pairs


class RequireRuby:
    """Fails early, naming the apt-get line, when Ruby or one of its libraries is missing.

    Options:
      ruby-package   the Debian package of the interpreter (default ``ruby``)
      libraries      lines of ``REQUIRE-NAME DEBIAN-PACKAGE`` (``cool.io ruby-cool.io``)
    Sets ``ruby`` (the interpreter's path) and ``ruby-version``; the version is part of the
    signature of every part that uses them.
    """

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        libraries = _pairs(options.get("libraries", ""))
        ruby_package = options.get("ruby-package", "ruby").strip()
        everything = " ".join([ruby_package, *(package for _, package in libraries)])
        ruby = shutil.which("ruby")
        if ruby is None:
            raise zc.buildout.UserError(
                f"[{name}] Ruby is not installed (no `ruby` on PATH). "
                f"Install it and the libraries this part needs: apt-get install {everything}"
            )
        missing = [
            (library, package)
            for library, package in libraries
            if subprocess.run(
                [ruby, "-e", f"require {library!r}"], capture_output=True, check=False
            ).returncode
            != 0
        ]
        if missing:
            raise zc.buildout.UserError(
                f"[{name}] Ruby libraries not found by {ruby}: "
                f"{', '.join(library for library, _ in missing)}. Install them: "
                f"apt-get install {' '.join(package for _, package in missing)}"
            )
        version = subprocess.run(
            [ruby, "-e", "print RUBY_VERSION"], capture_output=True, text=True, check=True
        ).stdout.strip()
        options["ruby"] = ruby
        options["ruby-version"] = version

    def install(self) -> list[str]:
        return []

    update = install
