"""Benchmark: building releases through the per-part binary cache.

Against a real `kiln cache serve` on 127.0.0.1 (empty at the start, but for the Debian
sources the releases compile, seeded first), for three releases:

- chain: the tiny SlapOS-style chain (kiln/testing/profiles/slapos-chain: liba <- libb <-
  hello, each a slapos.recipe.cmmi shared part linking the previous one through RUNPATH).
  It compiles in under a second: buildout's start-up dominates every build;
- libs: the same shape on real libraries (kiln/testing/profiles/slapos-libs: zlib <- libpng
  <- freetype, zlib <- libxml2, from Debian's sources): about two minutes of compiling cold;
- wendelin: software/wendelin (Python venvs, zstd compiled, the kiln distribution).

Three builds each:

  cold      empty cache: every part built, then packed, signed and uploaded
  warm      another machine: a fresh software directory at another path (and an empty
            shared directory at the same path): every part downloaded and unpacked
  (a part that installs no file, the machine's Python checked, has nothing to restore:
  it counts as kept)
  in place  one option of a dependency changed in the warm directory (liba:optimisation,
            zlib:optimisation, zstd:optimisation): that part and the parts that depend on
            it are rebuilt

Targets: warm <= 10% of cold and under 60 s with every part restored; in place rebuilds
exactly the changed part and its dependents.

    python bench/bench_software_build.py [--keep] [--only NAME | --skip NAME ...]

NAME is chain, libs or wendelin; each release runs alone with --only (libs takes about 5
minutes on a busy 2-core machine, wendelin about as long).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kiln.buildout.shared_parts import remove_tree
from kiln.software.build import BuildResult, build_release
from kiln.software.seed import seed_debian_package
from kiln.testing.releases import (
    DEBIAN_SOURCES,
    CacheFixture,
    snapshot_repository,
    start_test_cache,
)
from kiln.testing.slapos_chain import copy_chain
from kiln.testing.slapos_libs import DEBIAN_SOURCES as LIBS_SOURCES
from kiln.testing.slapos_libs import copy_libs

RELEASES = ("chain", "libs", "wendelin")


@dataclass
class Scenario:
    name: str
    release: Path
    option: tuple[str, str]  # the dependency option changed in place
    expected_rebuilt: tuple[str, ...]
    debian_sources: tuple[str, ...] = ()  # seeded into the cache before the cold build


def row(name: str, result: BuildResult) -> str:
    built = [n for n, p in result.parts.items() if p["outcome"] in ("built", "uploaded")]
    restored = [n for n, p in result.parts.items() if p["outcome"] == "hit"]
    kept = [
        n for n, p in result.parts.items() if p["outcome"] in ("shared", "unchanged", "no-files")
    ]
    return (
        f"| {name:<28} | {result.seconds:8.1f} | {len(built):5d} | {len(restored):8d} "
        f"| {len(kept):4d} | {', '.join(built) or '-'} |"
    )


def run_scenario(scenario: Scenario, cache: CacheFixture, work: Path) -> list[str]:
    shared = work / "shared"
    print(f"{scenario.name}: cold build (empty cache) ...", flush=True)
    cold = build_release(
        scenario.release, work / "cold", cache.config(upload=True), quiet=True, shared_dir=shared
    )
    print(f"{scenario.name}: warm build (fresh directory at another path) ...", flush=True)
    remove_tree(shared)  # another machine: its shared directory is empty
    warm_dir = work / "another" / "path" / "warm"
    warm = build_release(scenario.release, warm_dir, cache.config(), quiet=True, shared_dir=shared)
    section_option, value = scenario.option
    print(f"{scenario.name}: {section_option}={value} in place ...", flush=True)
    changed = build_release(
        scenario.release,
        warm_dir,
        cache.config(),
        {section_option: value},
        quiet=True,
        shared_dir=shared,
    )
    rebuilt = tuple(n for n, p in changed.parts.items() if p["outcome"] in ("built", "uploaded"))
    ratio = warm.seconds / cold.seconds
    # A part that installs no file (the machine's Python, checked) has nothing to restore.
    every_part_restored = all(p["outcome"] in ("hit", "no-files") for p in warm.parts.values())
    return [
        "",
        f"{scenario.name}, {len(cold.parts)} parts",
        f"| {'build':<28} | {'seconds':>8} | {'built':>5} | {'restored':>8} | kept | parts built |",
        f"|{'-' * 30}|{'-' * 10}|{'-' * 7}|{'-' * 10}|------|-------------|",
        row("cold (empty cache)", cold),
        row("warm (fresh dir, other path)", warm),
        row(f"in place: {section_option}", changed),
        f"warm / cold = {ratio:.1%} (target <= 10%), warm = {warm.seconds:.1f} s (target < 60 s),"
        f" every part restored: {every_part_restored}",
        f"in place rebuilt {', '.join(rebuilt)}: "
        f"{'as expected' if set(rebuilt) == set(scenario.expected_rebuilt) else 'UNEXPECTED'}"
        f" (the part and its dependents: {', '.join(scenario.expected_rebuilt)})",
    ]


def scenarios(work: Path, names: list[str]) -> list[Scenario]:
    """The releases to measure, each copied or snapshotted into ``work`` (only those named:
    a snapshot of the checkout takes a while)."""
    makers = {
        "chain": lambda: Scenario(
            "chain: SlapOS-style, tiny (shared parts)",
            copy_chain(work / "chain-profiles"),
            ("liba:optimisation", "-O1"),
            ("liba", "libb", "hello", "hello-command"),
        ),
        "libs": lambda: Scenario(
            "libs: SlapOS-style, real libraries (shared parts)",
            copy_libs(work / "libs-profiles"),
            ("zlib:optimisation", "-O1"),
            ("zlib", "libpng", "freetype", "libxml2"),
            LIBS_SOURCES,
        ),
        "wendelin": lambda: Scenario(
            "wendelin: software/wendelin",
            snapshot_repository(work / "checkout") / "software" / "wendelin",
            ("zstd:optimisation", "-O1"),
            ("zstd", "instance-profile"),
            DEBIAN_SOURCES,
        ),
    }
    return [makers[name]() for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    parser.add_argument("--only", choices=RELEASES, help="This release only.")
    parser.add_argument(
        "--skip",
        choices=RELEASES,
        action="append",
        default=[],
        help="Not this release (repeatable).",
    )
    args = parser.parse_args()
    names = [args.only] if args.only else [n for n in RELEASES if n not in args.skip]
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-software-"))
    cache = start_test_cache(work / "cache")
    lines: list[str] = []
    try:
        chosen = scenarios(work, names)
        for spec in sorted({spec for scenario in chosen for spec in scenario.debian_sources}):
            print(f"seeding the cache with Debian source package {spec} ...", flush=True)
            seed_debian_package(cache.client(upload=True), spec)
        for number, scenario in enumerate(chosen):
            lines += run_scenario(scenario, cache, work / f"run-{number}")
    finally:
        cache.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
