"""``kiln:npm-package``: a pinned npm package's files, unpacked into a part.

For front-end files a Python service serves (dygraphs for the Wendelin pages): the package
is fetched as ``npm:NAME@VERSION`` through the source cache (so an offline site seeds it
like any source), from the registry npm is configured with on the build machine
(:mod:`kiln.buildout.npm_registry`), and refused unless its bytes match the pinned
integrity hash (the package-lock's ``integrity``). No Node.js is run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import zc.buildout
import zc.buildout.download

from kiln.buildout.npm_registry import NpmPackageURL, integrity_of
from kiln.buildout.tree_hash import TreeHashError, unpack

Options = Any  # zc.buildout.buildout.Options


class NpmPackage:
    """Options:
      package    the npm name (``dygraphs``)
      version    the exact version (``2.2.2``)
      integrity  ``sha512-<base64>`` of the tarball, as in package-lock.json
    Sets ``location``: the unpacked package (its ``package.json`` at the top).
    """

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        self.name = name
        self.buildout = buildout
        self.options = options
        for required in ("package", "version", "integrity"):
            if not options.get(required, "").strip():
                raise zc.buildout.UserError(f"[{name}] option {required} is required")
        try:
            self.url = str(NpmPackageURL.parse(f"npm:{options['package']}@{options['version']}"))
        except ValueError as error:
            raise zc.buildout.UserError(f"[{name}] {error}") from None
        options["location"] = os.path.join(buildout["buildout"]["parts-directory"], name)

    def install(self) -> list[str]:
        expected = self.options["integrity"].strip()
        algorithm = expected.partition("-")[0]
        if algorithm not in ("sha512", "sha384", "sha256"):
            raise zc.buildout.UserError(f"[{self.name}] integrity must be sha512-<base64>")
        download = zc.buildout.download.Download(self.buildout["buildout"], hash_name=True)
        path, is_temp = download(self.url)
        location = Path(self.options["location"])
        staging = location.with_name(location.name + ".unpacking")
        try:
            found = integrity_of(Path(path), algorithm)
            if found != expected:
                raise zc.buildout.UserError(
                    f"[{self.name}] {self.url}: the tarball's integrity is {found}, but the "
                    f"profile pins {expected}: refused"
                )
            shutil.rmtree(staging, ignore_errors=True)
            top = unpack(Path(path), staging)  # npm tarballs hold one directory, package/
            shutil.rmtree(location, ignore_errors=True)
            top.rename(location)
        except TreeHashError as error:
            raise zc.buildout.UserError(f"[{self.name}] {self.url}: {error}") from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if is_temp:
                os.unlink(path)
        return [str(location)]

    def update(self) -> None:
        return None
