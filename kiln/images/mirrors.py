"""The Debian mirrors of this machine's apt configuration (deb822 `.sources` files).

Mirrors are never written into the repository: a template may name them, else they are read
here at bake time and passed to diskimage-builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SOURCES_DIR = Path("/etc/apt/sources.list.d")
SOURCES_LIST = Path("/etc/apt/sources.list")


class MirrorError(Exception):
    pass


@dataclass(frozen=True)
class Mirrors:
    main: str
    security: str | None


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Paragraphs of a deb822 file as dicts (continuation lines joined, comments dropped)."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
        elif line[0] in " \t" and last:
            current[last] = f"{current[last]} {line.strip()}".strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip().lower()
            current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def machine_mirrors(
    release: str, sources_dir: Path = SOURCES_DIR, sources_list: Path = SOURCES_LIST
) -> Mirrors:
    """The `deb` mirror serving ``release`` and the one serving ``release-security``."""
    entries: list[tuple[str, list[str]]] = []  # (uri, suites)
    for path in sorted(sources_dir.glob("*.sources")):
        for stanza in parse_deb822(path.read_text()):
            if "deb" in stanza.get("types", "").split() and stanza.get("enabled", "yes") != "no":
                suites = stanza.get("suites", "").split()
                entries.extend((uri, suites) for uri in stanza.get("uris", "").split())
    lists = [*sorted(sources_dir.glob("*.list")), sources_list]
    for path in lists:
        if path.is_file():
            for line in path.read_text().splitlines():
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb":
                    entries.append((words[1], [words[2]]))
    main = next((uri for uri, suites in entries if release in suites), None)
    security = next((uri for uri, suites in entries if f"{release}-security" in suites), None)
    if main is None:
        raise MirrorError(
            f"no apt source for {release} in {sources_dir} or {sources_list}: give "
            "source.mirror in the template or --var, e.g. mirror: http://MIRROR/debian"
        )
    return Mirrors(main.rstrip("/"), security.rstrip("/") if security else None)
