"""Benchmark: baking and booting images/appliance.yaml.  Run as root (diskimage-builder).

One run, one table, against a real `kiln cache serve` on 127.0.0.1 (empty at the start, then
seeded with the sources no registry here serves, as tests/test_images.py does):

  cold bake      empty cache: the layer is saved and uploaded, every part built and uploaded
  warm bake      the layer and every part restored from the cache
  baseline       the same disk-image-create elements without kiln's caches (no layer, every
                 part built from source inside the image)
  boot to ready  the warm raw image under qemu (TCG unless --accel) until the guest's
                 kiln-ready line, with every check of the template (and a second boot)
  qcow2 size     the compressed qcow2

Then where the warm bake's and the baseline's time goes (the longest diskimage-builder steps)
and the first boot's profile (systemd-analyze, blame, critical-chain).

Targets (the images issue): warm bake <= 25% of the baseline; boot to ready <= 45 s under TCG.

    python bench/bench_image.py [--keep] [--accel tcg|kvm]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "images" / "appliance.yaml"
STEP = re.compile(r"^\s*(\d+)s\s+(\S+)(?:\s+(\S+))?\s*$")  # kiln.images.dib's progress lines


class Steps:
    """Collects a bake's progress lines; answers how long each step took."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.marks: list[tuple[float, str, str]] = []

    def __call__(self, line: str) -> None:
        if match := STEP.match(line):
            self.marks.append((float(match[1]), match[2], match[3] or ""))

    def durations(self, total: float) -> list[tuple[float, str, str]]:
        ends = [t for t, _, _ in self.marks[1:]] + [total]
        pairs = zip(self.marks, ends, strict=True)
        return [(end - t, phase, step) for (t, phase, step), end in pairs]

    def by_phase(self, total: float) -> dict[str, float]:
        phases: dict[str, float] = defaultdict(float)
        for seconds, phase, _ in self.durations(total):
            phases[phase] += seconds
        return dict(phases)


def seed(cache) -> None:
    from kiln.software.seed import seed_debian_package, seed_npm_package
    from kiln.testing.fluentd import seed_fluentd_source
    from kiln.testing.releases import DEBIAN_SOURCES, NPM_PACKAGES

    client = cache.client(upload=True)
    for spec in DEBIAN_SOURCES:
        seed_debian_package(client, spec)
    for spec in NPM_PACKAGES:  # software/wendelin's dygraphs
        seed_npm_package(client, spec)
    seed_fluentd_source(client)  # software/monitor's fluentd


def print_where_time_goes(label: str, result, steps: Steps, top: int = 8) -> None:
    dib_seconds = result.phases.get("disk-image-create", result.seconds)
    print(
        f"\n{label}: {result.seconds:.0f} s; kiln's own steps (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in result.phases.items())
    )
    print("| diskimage-builder phase | s |\n|---|---:|")
    for phase, seconds in sorted(steps.by_phase(dib_seconds).items(), key=lambda i: -i[1]):
        if seconds >= 1:
            print(f"| {phase} | {seconds:.0f} |")
    longest = sorted(steps.durations(dib_seconds), reverse=True)[:top]
    print("longest steps: " + ", ".join(f"{step or phase} {s:.0f} s" for s, phase, step in longest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    parser.add_argument(
        "--accel",
        default="tcg",
        choices=["tcg", "kvm"],
        help="qemu accelerator of the boot (the issue's boot target is under TCG).",
    )
    parser.add_argument("--workdir", type=Path, help="Parent of the work directory.")
    args = parser.parse_args()
    os.environ["KILN_QEMU_ACCEL"] = args.accel  # read by kiln.images.qemu.accelerator

    from kiln.images.bake import CacheAccess, bake
    from kiln.images.boottest import run_boot_test
    from kiln.images.template import load_template
    from kiln.testing.releases import start_test_cache

    work = Path(tempfile.mkdtemp(prefix="kiln-bench-image-", dir=args.workdir))
    cache = start_test_cache(work / "cache")
    template = load_template(TEMPLATE, environ={})
    steps = {"cold": Steps(), "warm": Steps(), "baseline": Steps()}
    try:
        seed(cache)
        upload = CacheAccess(
            cache.server.upload_url, [cache.public_key], cache.key_dir / "builder.key"
        )
        download = CacheAccess(cache.server.url, [cache.public_key])
        print("cold bake (empty cache) ...", flush=True)
        cold = bake(template, work / "cold", upload, steps["cold"])
        print("warm bake (layer and parts in the cache) ...", flush=True)
        warm = bake(template, work / "warm", download, steps["warm"])
        print("baseline: disk-image-create of the same elements without kiln's caches ...")
        baseline = bake(template, work / "baseline", None, steps["baseline"])
        print(f"boot to kiln-ready ({args.accel}) ...", flush=True)
        raw = next(p for p in warm.images if p.suffix == ".raw")
        report = run_boot_test(raw, lambda line: None, timeout=1800, workdir=work)
    finally:
        cache.stop()
    qcow2 = next(p for p in warm.images if p.suffix == ".qcow2")
    outcomes = [p["outcome"] for parts in warm.manifest["parts"].values() for p in parts.values()]
    restored = sum(o in ("hit", "no-files") for o in outcomes)
    ratio = warm.seconds / baseline.seconds
    load = os.getloadavg()
    print()
    print(
        f"images/appliance.yaml, {len(outcomes)} parts, qemu accelerator: {args.accel}, "
        f"{os.cpu_count()} cores, load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (1/5/15 min)"
    )
    print("| measure | value | note |")
    print("|---|---:|---|")
    print(f"| cold bake | {cold.seconds:.0f} s | layer saved, parts built and uploaded |")
    print(
        f"| warm bake | {warm.seconds:.0f} s | layer restored: {warm.layer_restored}; "
        f"{restored}/{len(outcomes)} parts restored or nothing to restore |"
    )
    print(f"| baseline (no kiln caches) | {baseline.seconds:.0f} s | |")
    print(f"| warm / baseline | {ratio:.0%} | target <= 25% |")
    ready = " / ".join(f"{s:.0f} s" for s in report.ready_seconds)
    print(f"| boot to kiln-ready | {ready} | first / second boot; target <= 45 s under TCG |")
    print(f"| qcow2 size | {qcow2.stat().st_size / 1e6:.0f} MB | compressed |")
    failed = [f"{r.name}: {r.detail}" for r in report.results if not r.ok]
    print(f"| boot checks | {'all passed' if report.ok else 'FAILED'} | {'; '.join(failed)} |")
    print_where_time_goes("warm bake", warm, steps["warm"])
    print_where_time_goes("baseline", baseline, steps["baseline"])
    print("\nfirst boot (systemd-analyze in the guest):")
    print(report.profile)
    if args.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
