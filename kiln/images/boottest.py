"""`kiln image test` and `kiln image boot`: boot an image and check it from outside.

What to check comes from the image's manifest (written by `kiln image build`): the instances
with their ports, the status port and the template's tests.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kiln.images import manifest as manifests
from kiln.images.checks import Result, guest_ports, run_checks
from kiln.images.ec2 import EC2CheckFailed, check_ec2_boot, present_as_ec2
from kiln.images.qemu import VM, BootError, accelerator

DEFAULT_TIMEOUT = 900.0  # seconds to readiness: TCG on 2 busy cores


@dataclass
class TestReport:
    image: Path
    accelerator: str
    ready_seconds: list[float] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    profile: str = ""  # systemd-analyze of the first boot: where the time to ready goes

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)


def load_manifest(image: Path) -> dict:
    path = manifests.manifest_path(image)
    if not path.is_file():
        raise BootError(f"{image}: no manifest beside it ({path.name}); bake with kiln image build")
    return json.loads(path.read_text())


def boot_once(
    image: Path, description: dict, workdir: Path, timeout: float, ec2: bool = False
) -> tuple[VM, float]:
    vm = VM(image, workdir, guest_ports(description), hostname=description["name"])
    if ec2:  # NVMe root disk and an IMDSv2 stand-in instead of the NoCloud seed
        present_as_ec2(vm)
    vm.start()
    try:
        vm.wait_ready(timeout)
    except BaseException:
        vm.stop(timeout=5)
        raise
    return vm, vm.ready_seconds()


def ec2_result(vm: VM) -> Result:
    started = time.monotonic()
    try:
        return Result("ec2", True, check_ec2_boot(vm), time.monotonic() - started)
    except (EC2CheckFailed, BootError) as error:
        return Result("ec2", False, str(error), time.monotonic() - started)


def boot_profile(vm: VM, instances: list[str], lines: int = 15) -> str:
    """`systemd-analyze`, the slowest units (blame) and the chain each instance's unit waited
    on (critical-chain), read over SSH: where the time to ready goes."""
    total = vm.ssh("systemd-analyze", check=False).stdout.strip()
    blame = vm.ssh("systemd-analyze", "blame", "--no-pager", check=False).stdout.splitlines()
    units = [f"kiln-instance@{name}.service" for name in instances]
    chain = vm.ssh(
        "systemd-analyze", "critical-chain", "--no-pager", *units, check=False
    ).stdout.splitlines()
    chain = [line for line in chain if not line.startswith(("The time", "The time when"))]
    return "\n".join([total, "blame:", *blame[:lines], "critical-chain:", *chain])


def fresh_credentials(first: dict, second: dict) -> Result:
    """Two boots of the same image: every generated credential differs."""
    same = [
        f"{instance}/{name}"
        for instance, files in first.items()
        for name, text in files.items()
        if second.get(instance, {}).get(name) == text
    ]
    count = sum(len(files) for files in first.values())
    if not count:
        return Result("fresh-credentials", False, "no credential was generated at boot", 0)
    if same:
        return Result("fresh-credentials", False, f"the same on both boots: {same}", 0)
    return Result("fresh-credentials", True, f"{count} credentials, all different per boot", 0)


def run_boot_test(
    image: Path,
    progress: Callable[[str], None] = print,
    timeout: float = DEFAULT_TIMEOUT,
    workdir: Path | None = None,
    second_boot: bool = True,
) -> TestReport:
    """Boot ``image`` and run its template's checks; with ``second_boot`` (and the template's
    fresh-credentials test), boot it again to compare the generated credentials."""
    data = load_manifest(image)
    description, tests, ec2 = data["image"], data["tests"], bool(data.get("ec2"))
    report = TestReport(image, accelerator())
    with tempfile.TemporaryDirectory(prefix="kiln-image-test-", dir=workdir) as tmp:
        how = "as EC2 presents it (NVMe disk, IMDSv2 stand-in)" if ec2 else "throwaway overlay"
        progress(f"booting {image.name} under qemu ({report.accelerator}), {how}")
        vm, seconds = boot_once(image, description, Path(tmp) / "boot1", timeout, ec2)
        try:
            report.ready_seconds.append(seconds)
            progress(f"kiln-ready after {seconds:.0f} s")
            credentials = vm.credentials()
            report.profile = boot_profile(vm, [i["name"] for i in description["instances"]])
            report.results = run_checks(vm, description, tests, credentials)
            if ec2:
                report.results.append(ec2_result(vm))
        finally:
            vm.stop()
        progress("boot profile (systemd-analyze):")
        for line in report.profile.splitlines():
            progress(f"  {line.strip()}")
        for result in report.results:
            progress(f"  [{'ok' if result.ok else 'FAIL'}] {result.name}: {result.detail}")
        if second_boot and any(t["check"] == "fresh-credentials" for t in tests):
            progress("second boot of the same image: credentials must differ")
            vm2, seconds = boot_once(image, description, Path(tmp) / "boot2", timeout, ec2)
            try:
                report.ready_seconds.append(seconds)
                result = fresh_credentials(credentials, vm2.credentials())
            finally:
                vm2.stop()
            report.results.append(result)
            progress(f"  [{'ok' if result.ok else 'FAIL'}] {result.name}: {result.detail}")
    return report


def boot_for_user(image: Path, workdir: Path, timeout: float, progress=print) -> VM:
    """Boot and wait for readiness; print the URLs and the credentials generated at boot."""
    data = load_manifest(image)
    description = data["image"]
    started = time.monotonic()
    progress(f"booting {image.name} under qemu ({accelerator()}); state in {workdir}")
    vm, _ = boot_once(image, description, workdir, timeout, bool(data.get("ec2")))
    progress(f"ready after {time.monotonic() - started:.0f} s")
    for instance in description["instances"]:
        for name, port in instance["ports"].items():
            scheme = "http" if name == "http" else "tcp"
            progress(f"  {instance['name']} {name}: {scheme}://127.0.0.1:{vm.ports[port]}/")
    progress(f"  status: http://127.0.0.1:{vm.ports[description['status_port']]}/")
    progress(f"  ssh: {' '.join(vm.ssh_command())}")
    for instance, files in vm.credentials().items():
        for name, text in files.items():
            progress(f"  credentials of {instance} ({name}): {text}")
    return vm
