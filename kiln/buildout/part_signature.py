"""Content signatures of buildout parts, as Nix hashes a derivation's inputs.

A part's signature covers what decides its output and nothing else:

- its recipe (distribution name and version) and its options after substitution,
  with every install path replaced by a placeholder, so that the same part built in two
  directories gets the same signature;
- the signatures of the parts it references (``${other:...}``, also through plain
  sections), so that changing a leaf rebuilds that leaf and what depends on it;
- the content of files under the source tree that an option names (templates, patches);
- the platform: ``gcc -dumpmachine`` and the distribution.

It never covers which Python runs buildout: buildout's own ``__buildout_signature__`` (which
hashes the recipe eggs' install paths) and ``buildout:executable`` are left out.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# `${section:option}` references, as buildout writes them (section may be empty: `${:x}`).
_REFERENCE = re.compile(r"\$\{([^:}]*):([^}]*)\}")

# Options whose value is bookkeeping, not an input of the build.
_IGNORED_OPTIONS = frozenset({"__buildout_signature__", "__buildout_installed__", "recipe"})

SIGNATURE_VERSION = "kiln-part-signature/1"


@functools.cache
def platform_tuple() -> dict[str, str]:
    """The platform a binary part is built for: compiler triplet and distribution."""
    try:
        multiarch = subprocess.run(
            ["gcc", "-dumpmachine"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        # No compiler: fall back to what the kernel says, so pure parts still cache.
        multiarch = f"{os.uname().machine}-linux-gnu"
    return {"multiarch": multiarch, "os": distribution()}


def distribution(os_release: Path = Path("/etc/os-release")) -> str:
    """`debian-12` style name of the running distribution (from os-release)."""
    fields: dict[str, str] = {}
    try:
        for line in os_release.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep:
                fields[name.strip()] = value.strip().strip('"')
    except OSError:
        return "unknown"
    return f"{fields.get('ID', 'unknown')}-{fields.get('VERSION_ID', 'unknown')}"


class PathNormaliser:
    """Replaces install paths in option values with stable placeholders.

    ``paths`` are replaced wherever they occur (the historical rule, kept so that existing
    signatures do not change); ``bounded`` paths only where a whole path component ends, so
    that a short path such as the home directory does not eat into a longer name.
    """

    def __init__(self, paths: Mapping[str, str], bounded: Mapping[str, str] | None = None) -> None:
        cleaned = [(os.path.normpath(p), name, False) for p, name in paths.items() if p]
        cleaned += [(os.path.normpath(p), name, True) for p, name in (bounded or {}).items() if p]
        seen: set[str] = set()
        unique = []
        for path, name, is_bounded in cleaned:
            if path not in seen and path != "/":
                seen.add(path)
                unique.append((path, name, is_bounded))
        # Longest first, so that /sw/parts is replaced before /sw.
        self._paths = sorted(unique, key=lambda item: -len(item[0]))

    def __call__(self, value: str) -> str:
        for path, placeholder, is_bounded in self._paths:
            if is_bounded:
                value = re.sub(re.escape(path) + r"(?![\w.+-])", placeholder, value)
            else:
                value = value.replace(path, placeholder)
        return value


@dataclass
class PartInputs:
    """What goes into one part's signature, before hashing (kept for `explain`)."""

    recipe: str
    recipe_version: str
    options: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    dependencies: dict[str, str] = field(default_factory=dict)
    platform: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        document = {
            "version": SIGNATURE_VERSION,
            "recipe": self.recipe,
            "recipe-version": self.recipe_version,
            "options": self.options,
            "files": self.files,
            "dependencies": self.dependencies,
            "platform": self.platform,
        }
        encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()


def recipe_version(recipe: str) -> str:
    """Version of the distribution providing ``recipe`` (`dist:entry` or `dist`)."""
    dist = recipe.split(":", 1)[0].strip()
    dist = re.split(r"[\[<>=!~ ]", dist, maxsplit=1)[0]
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def referenced_sections(raw_options: Mapping[str, str], own_name: str) -> set[str]:
    """Sections named by `${section:option}` in raw (unsubstituted) option values."""
    found: set[str] = set()
    for value in raw_options.values():
        for section, _option in _REFERENCE.findall(str(value)):
            found.add(section or own_name)
    found.discard(own_name)
    return found


def _named_file(token: str) -> Path | None:
    """The file an option token names: a path, or a SlapOS `path#md5` reference."""
    for candidate in (token, token.partition("#")[0]):
        if not candidate.startswith("/"):
            continue
        path = Path(candidate)
        try:
            if path.is_file():
                return path.resolve()
        except OSError:
            continue
    return None


def file_digests(
    values: Iterable[str],
    source_roots: Iterable[Path],
    profile_roots: Iterable[Path] = (),
    output_roots: Iterable[Path] = (),
) -> dict[str, str]:
    """sha256 of files under the source tree or a profile directory that option values name.

    A template or patch given by path must rebuild the part when its content changes,
    even though the option value (the path) stays the same.  Keys are normalised paths
    (``@SOURCE@/...``, ``@PROFILE@/...``); a second file with the same key gets ``#2``.
    Files under ``output_roots`` (the software and shared directories) are what builds
    write, never inputs, even when a profile directory contains them.
    """
    roots = [(root.resolve(), "@SOURCE@") for root in source_roots]
    roots += [(root.resolve(), "@PROFILE@") for root in profile_roots]
    outputs = [root.resolve() for root in output_roots]
    digests: dict[str, str] = {}
    for value in values:
        for token in value.split():
            resolved = _named_file(token)
            if resolved is None or any(resolved.is_relative_to(out) for out in outputs):
                continue
            for root, placeholder in roots:
                if resolved.is_relative_to(root):
                    key = f"{placeholder}/{resolved.relative_to(root)}"
                    digest = hashlib.sha256(resolved.read_bytes()).hexdigest()
                    number = 2
                    while digests.get(key, digest) != digest:
                        key = f"{placeholder}/{resolved.relative_to(root)}#{number}"
                        number += 1
                    digests[key] = digest
                    break
    return digests


class SignatureCalculator:
    """Computes part signatures for one buildout, memoised, dependencies first.

    ``raw`` maps section -> raw options (with `${}` references), ``cooked`` section ->
    substituted options (after the recipes' __init__ added theirs); ``parts`` are the
    sections that have a recipe.
    """

    def __init__(
        self,
        raw: Mapping[str, Mapping[str, str]],
        cooked: Mapping[str, Mapping[str, str]],
        parts: Iterable[str],
        normalise: PathNormaliser,
        source_roots: Iterable[Path] = (),
        platform: Mapping[str, str] | None = None,
        profile_roots: Iterable[Path] = (),
        output_roots: Iterable[Path] = (),
    ) -> None:
        self._raw = raw
        self._cooked = cooked
        self._parts = set(parts)
        self._normalise = normalise
        self._source_roots = list(source_roots)
        self._profile_roots = list(profile_roots)
        self._output_roots = list(output_roots)
        self._platform = dict(platform if platform is not None else platform_tuple())
        self._signatures: dict[str, str] = {}
        self.inputs: dict[str, PartInputs] = {}

    def part_dependencies(self, part: str) -> set[str]:
        """Parts that ``part`` references, directly or through plain sections."""
        found: set[str] = set()
        seen: set[str] = {part}
        pending = list(referenced_sections(self._raw.get(part, {}), part))
        while pending:
            section = pending.pop()
            if section in seen:
                continue
            seen.add(section)
            if section in self._parts:
                found.add(section)
            else:
                pending.extend(referenced_sections(self._raw.get(section, {}), section))
        return found

    def signature(self, part: str, _stack: tuple[str, ...] = ()) -> str:
        if part in self._signatures:
            return self._signatures[part]
        if part in _stack:
            raise ValueError(f"circular references between parts: {' -> '.join(_stack)}")
        options = self._cooked[part]
        recipe = options.get("recipe", "")
        normalised = {
            key: self._normalise(value)
            for key, value in options.items()
            if key not in _IGNORED_OPTIONS and not key.startswith("_")
        }
        inputs = PartInputs(
            recipe=recipe,
            recipe_version=recipe_version(recipe),
            options=normalised,
            files=file_digests(
                options.values(), self._source_roots, self._profile_roots, self._output_roots
            ),
            dependencies={
                dep: self.signature(dep, (*_stack, part))
                for dep in sorted(self.part_dependencies(part))
            },
            platform=self._platform,
        )
        self.inputs[part] = inputs
        self._signatures[part] = inputs.digest()
        return self._signatures[part]
