"""Bake images/appliance.yaml for real, boot it under qemu, and bake it again warm.

One cold bake (every part built inside the image and uploaded to a real `kiln cache serve`),
one boot with every outside check (and a second boot for fresh credentials), one warm bake
that restores the layer and every part.  Real diskimage-builder, real qemu (TCG here).

The warm bake is the EC2 variant (`--var ec2=true`): the same packages and parts, so it
restores the cold bake's layer and parts just the same, and it is then booted the way EC2
presents an instance.  EC2 itself cannot run here; as far as qemu can, its root disk is on an
NVMe controller and the instance metadata service (IMDSv2, which cloud-init's Ec2 datasource
reads instead of a NoCloud seed) is kiln/images/imds.py's stand-in at 169.254.169.254: the
guest's side of the boot is real, and only that service is played, by a real HTTP server.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kiln.images import manifest
from kiln.images.bake import bake
from kiln.images.boottest import run_boot_test
from kiln.images.template import load_template
from kiln.software.seed import seed_debian_package, seed_npm_package
from kiln.testing.fluentd import seed_fluentd_source
from kiln.testing.releases import DEBIAN_SOURCES, NPM_PACKAGES, start_test_cache

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(os.geteuid() != 0, reason="diskimage-builder needs root (loop devices)"),
    pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="qemu-system-x86 missing"),
]
APPLIANCE = Path(__file__).resolve().parents[1] / "images" / "appliance.yaml"


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory):
    cache = start_test_cache(tmp_path_factory.mktemp("image-cache"))
    client = cache.client(upload=True)
    for spec in DEBIAN_SOURCES:
        seed_debian_package(client, spec)
    for spec in NPM_PACKAGES:  # software/wendelin's dygraphs: images build with no registry
        seed_npm_package(client, spec)
    seed_fluentd_source(client)  # software/monitor's fluentd: no registry carries it
    yield cache
    cache.stop()


@pytest.fixture(scope="session")
def cold_bake(image_cache, tmp_path_factory):
    template = load_template(APPLIANCE, environ={})
    return bake(template, tmp_path_factory.mktemp("cold"), image_cache.config(upload=True))


@pytest.fixture(scope="session")
def warm_bake(cold_bake, image_cache, tmp_path_factory):
    template = load_template(APPLIANCE, {"ec2": "true"}, environ={})  # see the docstring
    return bake(template, tmp_path_factory.mktemp("warm"), image_cache.config())


def test_cold_bake_writes_images_and_manifest(cold_bake):
    data = cold_bake.manifest
    assert {p.suffix for p in cold_bake.images} == {".qcow2", ".raw"}
    assert data["outputs"].keys() == {p.name for p in cold_bake.images}
    for path in cold_bake.images:
        assert data["outputs"][path.name]["sha512"] == manifest.sha512_file(path)
    assert "cloud-init" in data["packages"] and "openssh-server" in data["packages"]
    assert set(data["parts"]) == {"wendelin", "monitor"}
    assert all(p["signature"] for parts in data["parts"].values() for p in parts.values())
    assert not data["layer"]["restored"] and data["layer"].get("sha512")


def test_the_image_boots_and_passes_every_check(cold_bake, tmp_path):
    raw = next(p for p in cold_bake.images if p.suffix == ".raw")
    report = run_boot_test(raw, print, timeout=1200, workdir=tmp_path)
    failed = [f"{r.name}: {r.detail}" for r in report.results if not r.ok]
    assert not failed, failed
    names = {r.name for r in report.results}
    assert {"ingest (wendelin)", "monitor (monitor)", "ssh", "fresh-credentials"} <= names
    assert len(report.ready_seconds) == 2


def test_warm_bake_restores_the_layer_and_every_part(cold_bake, warm_bake):
    assert warm_bake.layer_restored
    outcomes = {
        part["outcome"] for parts in warm_bake.manifest["parts"].values() for part in parts.values()
    }
    # "no-files": a part that installs nothing (the machine's Python, Debian's Ruby: checked,
    # not built) has nothing to restore; nothing is built.
    assert outcomes <= {"hit", "unchanged", "no-files"}, warm_bake.manifest["parts"]
    # Same packages and parts, same package list and part signatures (the EC2 variant's
    # template differs by its `ec2` only).
    warm, cold = manifest.identity(warm_bake.manifest), manifest.identity(cold_bake.manifest)
    assert {**warm, "template": None} == {**cold, "template": None}
    print(f"cold bake {cold_bake.seconds:.0f} s, warm bake {warm_bake.seconds:.0f} s")


def test_the_ec2_variant_boots_as_on_ec2(warm_bake, tmp_path):
    """NVMe root disk, IMDSv2 stand-in; every check of the template, and the ec2 check."""
    assert warm_bake.manifest["ec2"] and "kiln-ec2" in warm_bake.manifest["elements"]
    raw = next(p for p in warm_bake.images if p.suffix == ".raw")
    # One boot: fresh credentials per boot are the plain image's test above.
    report = run_boot_test(raw, print, timeout=1200, workdir=tmp_path, second_boot=False)
    failed = [f"{r.name}: {r.detail}" for r in report.results if not r.ok]
    assert not failed, failed
    assert {"ingest (wendelin)", "monitor (monitor)", "ssh", "ec2"} <= {
        r.name for r in report.results
    }
