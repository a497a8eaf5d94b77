"""zc.buildout extension: a per-part binary cache through ShaCache/ShaDir, and cached sources.

Enable it in a profile with::

    [buildout]
    extensions = kiln

    [networkcache]
    download-cache-url = http://127.0.0.1:5080/shacache
    download-dir-url = http://127.0.0.1:5080/shadir
    trusted-keys = builder:BASE64...
    # only on builders that publish:
    upload-cache-url = http://user:password@127.0.0.1:5080/shacache
    upload-dir-url = http://user:password@127.0.0.1:5080/shadir
    signing-key-file = /path/to/builder.key

Every option is read by :func:`kiln.shacache.config.parse_cache_config`, which lists them.
The section is the whole configuration of a run: the environment ($KILN_CACHE_URL, ...) is
read by the `kiln` commands, not here.

For every part buildout installs, the extension computes the part's signature
(:mod:`kiln.buildout.part_signature`) and looks up ShaDir key ``kiln-part:<signature>``:

- a trusted entry for this platform whose blob verifies: the part is unpacked (hit);
- otherwise the recipe builds it (miss), then, with an upload key, the part is packed,
  uploaded and signed (uploaded).

Untrusted or corrupt entries are reported and never used.  Every decision is logged, and
the per-part outcome is written to ``.kiln-binary-cache.json`` in the buildout directory.

Source downloads go through the cache too (:mod:`kiln.buildout.source_download`).

Buildout offers no hook around one part's install, so the extension wraps two things for
the length of the run, and ``unload`` restores them: ``Buildout._compute_part_signatures``
on this buildout object (called once every recipe is initialised and every option is
final: the moment to sign the parts and wrap each recipe's ``install``), and
``zc.buildout.download.Download.download`` (every recipe's downloads go through it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zc.buildout
import zc.buildout.download

from kiln.buildout.part_archive import ARCHIVE_FORMAT, ArchiveError, pack_part, unpack_part
from kiln.buildout.part_signature import PathNormaliser, SignatureCalculator, platform_tuple
from kiln.buildout.profile_base import apply_profile_base_location
from kiln.buildout.shared_parts import (
    SharedLocation,
    shared_location,
    shared_part_lock,
    shared_roots,
)
from kiln.buildout.source_download import SourceCache
from kiln.shacache.client import CacheClient, CacheError
from kiln.shacache.config import CacheConfig, parse_cache_config

log = logging.getLogger("kiln.binary-cache")

EXTENSION_NAME = "kiln"
KEY_PREFIX = "kiln-part:"
REPORT_FILE = ".kiln-binary-cache.json"
# Set on every part: buildout reinstalls a part when an option changes, so a part whose
# signature changed (a dependency changed) is reinstalled even when its own options did not.
# The leading underscore keeps it out of the signatures themselves.
SIGNATURE_OPTION = "__kiln_signature__"
# Set by `kiln software build`, which prints its own summary table: one summary, not two.
CALLER_PRINTS_SUMMARY = "KILN_CALLER_PRINTS_SUMMARY"


@dataclass
class PartReport:
    part: str
    signature: str
    # hit | built | uploaded | unchanged | shared (already built in the shared directory)
    # | no-files (the recipe installed no file, e.g. a check: nothing to cache)
    outcome: str = "unchanged"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def read_config(buildout: Any) -> CacheConfig:
    """The `[networkcache]` section, parsed (the defaults when there is none)."""
    if "networkcache" not in buildout._raw:
        return parse_cache_config()
    section = buildout["networkcache"]
    return parse_cache_config({key: section[key] for key in section})


class BinaryCache:
    def __init__(
        self,
        buildout: Any,
        config: CacheConfig,
        client: CacheClient | None,
        profile_directories: list[Path] | None = None,
    ) -> None:
        self.buildout = buildout
        self.client = client
        self.reports: dict[str, PartReport] = {}
        self.source_events: list[str] = []
        self.enabled = config.binary_cache
        self.source_root = config.source_root or ""
        self.directory = Path(buildout["buildout"]["directory"])
        self.calculator: SignatureCalculator | None = None
        # Profile directories outside the checkout (under it, @SOURCE@ already applies).
        source = Path(self.source_root).resolve() if self.source_root else None
        # Not the software directory either: `kiln software build` writes its generated
        # profile there, and the files next to it are outputs of earlier runs.
        self.profile_directories = [
            d
            for d in profile_directories or []
            if (source is None or not d.resolve().is_relative_to(source))
            and not d.resolve().is_relative_to(self.directory.resolve())
        ]

    # -- signatures ---------------------------------------------------------------------

    def _normaliser(self) -> PathNormaliser:
        section = self.buildout["buildout"]
        paths = {str(self.directory): "@BUILDOUT@", sys.executable: "@BUILDOUT-PYTHON@"}
        for option in ("parts-directory", "eggs-directory", "develop-eggs-directory"):
            paths[section[option]] = f"@{option.upper()}@"
        paths[section["bin-directory"]] = "@BIN-DIRECTORY@"
        if self.source_root:
            paths[self.source_root] = "@SOURCE@"
        # No other path of this machine may enter a signature either: where the profiles
        # and the shared parts are (whole path components only).  The home directory is not
        # replaced as such: what lives there by default (~/.kiln/software, ~/.kiln/shared) is
        # replaced above, and a Python under it (pyenv) is a real input of the venvs, which
        # link to it.
        bounded = {str(d): "@PROFILE@" for d in self.profile_directories}
        bounded.update({root: "@SHARED@" for root in shared_roots(section)})
        return PathNormaliser(paths, bounded)

    def attach(self, parts: list[str]) -> None:
        """Sign every part about to be installed and route its install through the cache."""
        # Raw sections (not buildout[name], which would initialise unused recipes).
        raw = {name: dict(options) for name, options in self.buildout._raw.items()}
        cooked = _LazySections(self.buildout)
        with_recipe = [name for name, options in raw.items() if "recipe" in options]
        roots = [Path(self.source_root)] if self.source_root else []
        self.calculator = SignatureCalculator(
            raw,
            cooked,
            with_recipe,
            self._normaliser(),
            roots,
            platform_tuple(),
            self.profile_directories,
            # What builds write is never an input, even inside a profile directory.
            [self.directory, *(Path(root) for root in shared_roots(self.buildout["buildout"]))],
        )
        for part in parts:
            signature = self.calculator.signature(part)
            self.reports[part] = PartReport(part, signature)
        for part in parts:
            options = self.buildout[part]
            options[SIGNATURE_OPTION] = self.reports[part].signature
            recipe = options.recipe
            shared = shared_location(recipe)
            recipe.install = self._cached_install(part, recipe.install, shared)
            if shared is not None and hasattr(recipe, "update"):
                recipe.update = self._shared_update(part, recipe.update, recipe.install, shared)

    # -- per part -------------------------------------------------------------------------

    def _note(self, report: PartReport, message: str, *args: object) -> None:
        text = message % args
        report.notes.append(text)
        log.info("%s: %s", report.part, text)

    def _cached_install(
        self, part: str, install: Callable[[], Any], shared: SharedLocation | None
    ) -> Callable[[], Any]:
        # Shared recipes call self.install(True) from update: pass arguments through.
        def cached_install(*args: Any) -> Any:
            if shared is None:
                return install_once(*args)
            report = self.reports[part]
            waiting = f"waiting for another build installing {shared.path}"
            with shared_part_lock(shared, lambda: self._note(report, waiting)):
                # Checked under the lock: the other build may just have installed it.
                return install_once(*args)

        def install_once(*args: Any) -> Any:
            report = self.reports[part]
            started = time.monotonic()
            if shared is not None and shared.installed:
                # Built before, by this or another release: the recipe finds it and returns.
                report.outcome = "shared"
                self._note(report, "already in the shared directory %s", shared.path)
                return install(*args)
            restored = self._restore(report, shared) if self.enabled else None
            if restored is not None:
                report.outcome = "hit"
                report.seconds = time.monotonic() - started
                self._note(report, "hit, restored from the cache in %.1f s", report.seconds)
                # A shared part returns no path: buildout must never remove it.
                return () if shared is not None else restored
            installed = install(*args)
            report.seconds = time.monotonic() - started
            if shared is None and not _existing(installed):
                # A check (the machine's Python, a required command): nothing to cache, and
                # an empty entry would later be reported a hit that installs nothing.
                report.outcome = "no-files"
                self._note(report, "installed no file: nothing to cache (%.1f s)", report.seconds)
                return installed
            report.outcome = "built"
            self._note(report, "built in %.1f s", report.seconds)
            if self.enabled:
                self._publish(report, installed, shared)
            return installed

        return cached_install

    def _shared_update(
        self,
        part: str,
        update: Callable[[], Any],
        cached_install: Callable[[], Any],
        shared: SharedLocation,
    ) -> Callable[[], Any]:
        """Buildout updates a shared part whose options did not change; when its directory
        was removed meanwhile, the recipe would rebuild it: restore it from the cache first."""

        def shared_update() -> Any:
            if shared.installed:
                return update()
            return cached_install()

        return shared_update

    def _restore(self, report: PartReport, shared: SharedLocation | None) -> list[str] | None:
        key = KEY_PREFIX + report.signature
        if self.client is None or not self.client.can_download:
            self._note(report, "miss (no download cache configured)")
            return None
        try:
            for entry in self.client.lookup(key):
                if not entry.trusted:
                    self._note(report, "refused untrusted entry: %s", entry.reason)
            entries = self.client.select(key, platform_tuple())
        except CacheError as error:
            self._note(report, "miss (cache unreachable: %s)", error)
            return None
        if not entries:
            self._note(report, "miss (no trusted entry for %s)", key)
            return None
        for entry in entries:
            with tempfile.TemporaryDirectory(prefix="kiln-part-") as tmp:
                archive = Path(tmp) / f"part.{ARCHIVE_FORMAT}"
                try:
                    if bool(entry.get("shared", False)) != (shared is not None):
                        # Paths relative to the wrong root would land in the wrong place.
                        raise ArchiveError(
                            "the entry is for a shared part and this one is not, or the reverse"
                        )
                    self.client.download(entry["sha512"], archive)
                    restored = unpack_part(
                        archive,
                        entry["paths"],
                        self.directory if shared is None else shared.root,
                        entry["buildout-directory"],
                        bool(entry.get("relocatable", False)),
                    )
                    if shared is not None and not shared.installed:
                        raise ArchiveError(f"the entry does not install {shared.path}")
                    return restored
                except (CacheError, ArchiveError, KeyError, OSError) as error:
                    self._note(
                        report, "refused entry %s…: %s", entry.get("sha512", "?")[:16], error
                    )
        self._note(report, "miss (no usable entry); building")
        return None

    def _publish(self, report: PartReport, installed: Any, shared: SharedLocation | None) -> None:
        if self.client is None or not self.client.can_upload:
            return
        paths = [installed] if isinstance(installed, str) else list(installed or ())
        # A shared part is packed from its shared location, relative to the shared root.
        root = self.directory if shared is None else shared.root
        if shared is not None:
            paths = [str(shared.path)]
        with tempfile.TemporaryDirectory(prefix="kiln-pack-") as tmp:
            try:
                packed = pack_part(paths, root, Path(tmp))
            except ArchiveError as error:
                self._note(report, "not uploaded: %s", error)
                return
            if not packed.relocatable:
                self._note(
                    report,
                    "binary files embed the build directory (%s): the cached part only "
                    "serves builds in %s",
                    ", ".join(packed.binary_files_with_path[:3]),
                    root,
                )
            metadata = {
                "part": report.part,
                "signature": report.signature,
                "paths": packed.paths,
                # The directory `paths` are relative to: the software directory, or the
                # shared root for a shared part ("shared": true).
                "buildout-directory": str(root.resolve()),
                "shared": shared is not None,
                "relocatable": packed.relocatable,
                "format": ARCHIVE_FORMAT,
                **platform_tuple(),
            }
            try:
                sha512 = self.client.upload(packed.archive, KEY_PREFIX + report.signature, metadata)
            except CacheError as error:
                self._note(report, "upload failed: %s", error)
                return
            size = packed.archive.stat().st_size
        report.outcome = "uploaded"
        self._note(report, "uploaded %.1f MB (sha512 %s…)", size / 1e6, sha512[:16])

    # -- end of run -----------------------------------------------------------------------

    def write_report(self) -> None:
        counts: dict[str, int] = {}
        for report in self.reports.values():
            counts[report.outcome] = counts.get(report.outcome, 0) + 1
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        if not os.environ.get(CALLER_PRINTS_SUMMARY):
            log.info("binary cache summary: %s", summary or "no parts")
        inputs = self.calculator.inputs if self.calculator else {}
        document = {
            "parts": {name: asdict(report) for name, report in self.reports.items()},
            # What each signature covers, to explain an unexpected miss.
            "inputs": {name: asdict(value) for name, value in inputs.items()},
            "sources": self.source_events,
            "platform": platform_tuple(),
        }
        path = self.directory / REPORT_FILE
        path.write_text(json.dumps(document, indent=2) + "\n")


def _existing(installed: Any) -> list[str]:
    """The paths a recipe's install returned that exist."""
    paths = [installed] if isinstance(installed, str) else list(installed or ())
    return [p for p in paths if os.path.lexists(p)]


class _LazySections:
    """Section name -> substituted options, read only when a signature needs them."""

    def __init__(self, buildout: Any) -> None:
        self._buildout = buildout

    def __getitem__(self, name: str) -> dict[str, str]:
        section = self._buildout[name]
        return {key: section[key] for key in section}


_ACTIVE: dict[int, tuple[BinaryCache, Any]] = {}


def _listed(buildout: Any) -> bool:
    return EXTENSION_NAME in buildout["buildout"].get("extensions", "").split()


def load(buildout: Any) -> None:
    """Entry point `zc.buildout.extension`: called once extensions are installed."""
    # buildout calls every installed `zc.buildout.extension` entry point as soon as any
    # extension is listed; act only when this one is.
    if not _listed(buildout):
        return
    try:
        config = read_config(buildout)
        client = CacheClient.from_config(config) if config.names_a_cache else None
    except Exception as error:  # a bad [networkcache] must name itself
        raise zc.buildout.UserError(f"[networkcache] is not usable: {error}") from error
    profile_directories = apply_profile_base_location(buildout)
    cache = BinaryCache(buildout, config, client, profile_directories)
    original_download = zc.buildout.download.Download.download
    sources = SourceCache(client, cache.source_events)
    zc.buildout.download.Download.download = sources.wrap(original_download)
    _ACTIVE[id(buildout)] = (cache, original_download)

    compute = buildout._compute_part_signatures

    def compute_and_attach(parts: list[str]) -> None:
        compute(parts)
        cache.attach(list(parts))

    buildout._compute_part_signatures = compute_and_attach
    where = "no cache configured" if client is None else "cache configured"
    log.info("binary cache extension loaded (%s, pid %d)", where, os.getpid())


def unload(buildout: Any) -> None:
    """Entry point `zc.buildout.unloadextension`: report, and restore what load wrapped."""
    active = _ACTIVE.pop(id(buildout), None)
    if active is None:
        return
    cache, original_download = active
    zc.buildout.download.Download.download = original_download
    cache.write_report()
