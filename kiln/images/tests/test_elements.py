"""kiln's diskimage-builder elements and the no-device-mapper stand-ins."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.images import dib

ROOT = Path(__file__).resolve().parents[3]
ELEMENTS = ROOT / "images" / "elements"
HOOK_DIRS = ("extra-data.d", "install.d", "post-root.d", "cleanup.d", "root.d", "finalise.d")


def hooks() -> list[Path]:
    return sorted(p for p in ELEMENTS.glob("*/*.d/*") if p.parent.name in HOOK_DIRS)


@pytest.mark.unit
@pytest.mark.parametrize("script", hooks() + sorted(dib.SHIMS.iterdir()), ids=lambda p: p.name)
def test_scripts_are_executable_bash_that_parses(script):
    assert os.access(script, os.X_OK), f"{script} is not executable (DIB skips it)"
    assert script.read_text().startswith("#!/bin/bash")
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.unit
def test_every_element_says_what_it_does():
    for element in ELEMENTS.iterdir():
        assert (element / "README.rst").is_file(), element


@pytest.mark.unit
def test_failure_names_phase_and_element(tmp_path):
    log = ["dib-run-parts Running /tmp/x/hooks/install.d/60-kiln-releases\n", "boom\n"]
    fake = tmp_path / "disk-image-create"
    fake.write_text("#!/bin/sh\nprintf '%s' \"" + "".join(log) + '"\nexit 3\n')
    fake.chmod(0o755)
    run = dib.DibRun(["kiln-releases"], tmp_path / "img", ["qcow2"], [ELEMENTS])
    lines: list[str] = []
    original = dib.disk_image_create
    dib.disk_image_create = lambda: str(fake)
    try:
        with pytest.raises(dib.DibError) as caught:
            run.run(lines.append, base_env={"PATH": os.environ["PATH"]})
    finally:
        dib.disk_image_create = original
    message = str(caught.value)
    assert "phase install, element kiln-releases (60-kiln-releases) (exit 3)" in message
    assert "boom" in message and str(tmp_path / "img.dib.log") in message
    assert any("install" in line and "kiln-releases/60-kiln-releases" in line for line in lines)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("sfdisk"), reason="needs root, sfdisk")
def test_kpartx_stand_in_maps_partitions_with_loop_devices(tmp_path):
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as stream:
        stream.truncate(64 << 20)
    layout = "label: dos\nstart=2048, size=40960, type=83\nstart=43008, type=83\n"
    subprocess.run(["sfdisk", "-q", str(disk)], input=layout, text=True, check=True)
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(disk)], capture_output=True, text=True, check=True
    ).stdout.strip()
    name = Path(loop).name
    try:
        subprocess.run([str(dib.SHIMS / "kpartx"), "-av", loop], check=True)
        first = Path(f"/dev/mapper/{name}p1")
        # A device node of its own (not a symlink to /dev/loopN): grub-mkconfig must not see
        # a loop device backed by another one.
        assert first.is_block_device() and not first.is_symlink()
        size = subprocess.run(
            ["blockdev", "--getsize64", str(first)], capture_output=True, text=True, check=True
        )
        assert int(size.stdout) == 40960 * 512
    finally:
        subprocess.run([str(dib.SHIMS / "kpartx"), "-d", loop], check=True)
        subprocess.run(["losetup", "-d", loop], check=True)
    assert not Path(f"/dev/mapper/{name}p1").exists()
    attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert str(disk) not in attached


@pytest.mark.unit
def test_instances_start_beside_cloud_init_and_ready_waits_for_ssh():
    """The first boot's order (images/README.md, first boot): the instances do not wait for
    basic.target (which waits for cloud-init's network stage); the readiness line does, and
    for SSH."""
    units = (ELEMENTS / "kiln-releases" / "install.d" / "55-kiln-units").read_text()
    instance, ready = units.split("kiln-ready.service <<'UNIT'")
    assert "DefaultDependencies=no" in instance
    assert "After=cloud-init-local.service" in instance
    assert "network-online" not in instance and "cloud-init.service" not in instance
    assert "DefaultDependencies=no" not in ready and "After=ssh.service" in ready
    boot_time = (ELEMENTS / "kiln-releases" / "install.d" / "56-kiln-boot-time").read_text()
    assert "systemctl mask cloud-config.service" in boot_time
    assert "cloud_config_modules: []" in boot_time
