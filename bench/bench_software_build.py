"""Benchmark: building software/wendelin through the per-part binary cache.

One run, three builds against a real `kiln cache serve` on 127.0.0.1 (empty at the start):

  cold    empty cache, every part compiled/installed, then packed, signed and uploaded
  warm    a fresh software directory, cache full: every part downloaded and unpacked
  leaf    a fresh directory with one leaf option changed (zstd:optimisation): that part
          and the parts that depend on it are built, the rest downloaded

Targets (issue 4): warm <= 10% of cold and under 60 s; leaf rebuilds only the changed part
and its dependents.

    python bench/bench_software_build.py [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from kiln.software.build import BuildResult, build_release
from kiln.software.seed import seed_debian_package
from kiln.testing.releases import DEBIAN_SOURCES, snapshot_repository, start_test_cache


def row(name: str, result: BuildResult) -> str:
    built = [n for n, p in result.parts.items() if p["outcome"] in ("built", "uploaded")]
    downloaded = [n for n, p in result.parts.items() if p["outcome"] == "hit"]
    return (
        f"| {name:<22} | {result.seconds:8.1f} | {len(built):5d} | {len(downloaded):10d} "
        f"| {', '.join(built) or '-'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-software-"))
    cache = start_test_cache(work / "cache")
    try:
        for spec in DEBIAN_SOURCES:
            seed_debian_package(cache.client(upload=True), spec)
        release = snapshot_repository(work / "checkout") / "software" / "wendelin"
        print("cold build (empty cache) ...", flush=True)
        cold = build_release(release, work / "cold", cache.config(upload=True), quiet=True)
        print("warm build (fresh directory) ...", flush=True)
        warm = build_release(release, work / "warm", cache.config(), quiet=True)
        print("leaf option change (zstd:optimisation=-O1) ...", flush=True)
        leaf = build_release(
            release, work / "leaf", cache.config(), {"zstd:optimisation": "-O1"}, quiet=True
        )
    finally:
        cache.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("software/wendelin, " + f"{len(cold.parts)} parts")
    print(f"| {'build':<22} | {'seconds':>8} | {'built':>5} | {'downloaded':>10} | parts built |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 7}|{'-' * 12}|-------------|")
    print(row("cold (empty cache)", cold))
    print(row("warm (fresh dir)", warm))
    print(row("one leaf option", leaf))
    ratio = warm.seconds / cold.seconds
    print()
    print(f"warm / cold = {ratio:.1%} (target <= 10%), warm = {warm.seconds:.1f} s (target < 60 s)")


if __name__ == "__main__":
    main()
