"""Benchmark: baking and booting images/appliance.yaml.  Run as root (diskimage-builder).

One run, one table, against a real `kiln cache serve` on 127.0.0.1 (empty at the start):

  cold bake      empty cache: the layer is saved and uploaded, every part built and uploaded
  warm bake      the layer and every part restored from the cache
  baseline       the same disk-image-create elements without kiln's caches (no layer, every
                 part built from source inside the image)
  boot to ready  the warm raw image under qemu (TCG here) until the guest's kiln-ready line
  qcow2 size     the compressed qcow2

Targets (the images issue): warm bake <= 25% of the baseline; boot to ready <= 45 s under TCG.

    python bench/bench_image.py [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from kiln.images.bake import CacheAccess, bake
from kiln.images.boottest import run_boot_test
from kiln.images.qemu import accelerator
from kiln.images.template import load_template
from kiln.software.seed import seed_debian_package
from kiln.testing.releases import DEBIAN_SOURCES, start_test_cache

TEMPLATE = Path(__file__).resolve().parents[1] / "images" / "appliance.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-image-"))
    cache = start_test_cache(work / "cache")
    template = load_template(TEMPLATE, environ={})
    quiet = lambda line: None  # noqa: E731 - the table is the output
    try:
        for spec in DEBIAN_SOURCES:
            seed_debian_package(cache.client(upload=True), spec)
        upload = CacheAccess(
            cache.server.upload_url, [cache.public_key], cache.key_dir / "builder.key"
        )
        download = CacheAccess(cache.server.url, [cache.public_key])
        print("cold bake (empty cache) ...", flush=True)
        cold = bake(template, work / "cold", upload, quiet)
        print("warm bake (layer and parts in the cache) ...", flush=True)
        warm = bake(template, work / "warm", download, quiet)
        print(
            "baseline: disk-image-create of the same elements without kiln's caches ...", flush=True
        )
        baseline = bake(template, work / "baseline", None, quiet)
        print("boot to kiln-ready ...", flush=True)
        raw = next(p for p in warm.images if p.suffix == ".raw")
        report = run_boot_test(raw, quiet, timeout=1200, workdir=work)
    finally:
        cache.stop()
    qcow2 = next(p for p in warm.images if p.suffix == ".qcow2")
    hits = sum(
        p["outcome"] == "hit" for parts in warm.manifest["parts"].values() for p in parts.values()
    )
    parts = sum(len(parts) for parts in warm.manifest["parts"].values())
    ratio = warm.seconds / baseline.seconds
    print()
    print(f"images/appliance.yaml, {parts} parts, qemu accelerator: {accelerator()}")
    print("| measure | value | note |")
    print("|---|---:|---|")
    print(f"| cold bake | {cold.seconds:.0f} s | layer saved, parts built and uploaded |")
    print(
        f"| warm bake | {warm.seconds:.0f} s | layer restored: {warm.layer_restored}; "
        f"{hits}/{parts} parts restored |"
    )
    print(f"| baseline (no kiln caches) | {baseline.seconds:.0f} s | |")
    print(f"| warm / baseline | {ratio:.0%} | target <= 25% |")
    print(f"| boot to kiln-ready | {report.ready_seconds[0]:.0f} s | target <= 45 s under TCG |")
    print(f"| qcow2 size | {qcow2.stat().st_size / 1e6:.0f} MB | compressed |")
    print(f"| boot checks | {'all passed' if report.ok else 'FAILED'} | |")
    if args.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
