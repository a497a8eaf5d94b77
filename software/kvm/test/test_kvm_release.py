"""software/kvm: qemu is required at build time; the instance boots an image with forwards,
and its health is the guest's readiness (kiln image run), not qemu's forwarded ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln.common.addresses import free_ports
from kiln.software.build import BuildError, BuildResult, build_release
from kiln.software.instance import InstanceError, instantiate
from kiln.testing.releases import CacheFixture, build_snapshot_release

pytestmark = pytest.mark.slow

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or shutil.which("qemu-img") is None,
    reason="qemu-system-x86 and qemu-utils are not installed (.ci/apt-packages.txt has them)",
)


@pytest.fixture(scope="module")
def kvm_build(
    wendelin_cold_build: BuildResult,
    release_cache: CacheFixture,
    source_snapshot: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> BuildResult:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    return build_snapshot_release(
        source_snapshot, "kvm", tmp_path_factory.mktemp("kvm"), release_cache.config()
    )


def test_build_without_qemu_fails_naming_the_packages(
    source_snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATH with Python 3.11 but no qemu, as on a machine without the packages.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3.11").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(BuildError) as failure:
        build_release(source_snapshot / "software" / "kvm", tmp_path / "sw", quiet=True)
    message = str(failure.value)
    assert "qemu-system-x86_64" in message
    assert "apt-get install qemu-system-x86 qemu-utils" in message


@needs_qemu
def test_instance_without_image_says_which_parameter(
    kvm_build: BuildResult, tmp_path: Path
) -> None:
    with pytest.raises(InstanceError, match="--param image="):
        instantiate(kvm_build.software_dir, tmp_path / "instance", {})


@needs_qemu
def test_a_disk_that_boots_nothing_is_unhealthy_and_says_why(
    kvm_build: BuildResult, tmp_path: Path
) -> None:
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "64M"], check=True)
    ssh, service, status = free_ports(3)
    parameters = {
        "image": str(image),
        "ssh-port": str(ssh),
        "service-port": str(service),
        "status-port": str(status),
        "memory": "128",
        "stop-timeout": "2",
    }
    instance = instantiate(kvm_build.software_dir, tmp_path / "instance", parameters)
    try:
        instance.start()
        deadline = time.monotonic() + 60
        # Until the runner answers (503), not merely refuses connections, and supervisor counts
        # the VM as running (STARTING until its start seconds have passed).
        while True:
            checks = {check.name: check for check in instance.checks()}
            readiness = checks["guest readiness (kiln-ready)"]
            answered = "answered" in readiness.detail and checks["process vm"].ok
            if answered or time.monotonic() > deadline:
                break
            time.sleep(1)
        # qemu runs, and its forwarded port listens: what the old check called healthy.
        assert checks["process vm"].ok, checks
        socket.create_connection(("127.0.0.1", ssh), timeout=5).close()
        # The guest's readiness is what counts: a disk that boots nothing is not healthy.
        assert not readiness.ok
        assert "answered 503" in readiness.detail and "kernel did not start" in readiness.detail
        assert not instance.healthy()
        assert os.path.getsize(image) < 1 << 20  # a throwaway overlay: never written
    finally:
        instance.stop()
