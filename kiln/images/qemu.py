"""Boot an image under qemu: a throwaway overlay, a NoCloud seed, forwarded ports, the serial
console in a file, and the guest's readiness line.

KVM is used where /dev/kvm works, TCG otherwise (`KILN_QEMU_ACCEL=tcg|kvm` decides).  The
image itself is never written: the VM runs on a qcow2 overlay in its work directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from kiln.common.addresses import free_ports
from kiln.images import seed

READY = re.compile(r"kiln-ready (\{.*\})")
NOT_READY = re.compile(r"kiln-not-ready (\{.*\})")
SSH_PORT = 22


class BootError(Exception):
    """The VM did not come up; the message names what, and shows the serial log's tail."""


def what_is_missing(console: str) -> str:
    """What a serial console without a readiness line says about how far the guest got."""
    if "Linux version" not in console:
        return "the kernel did not start (no boot messages on the serial console)"
    if "login:" not in console and "Reached target" not in console:
        return "systemd did not reach its targets"
    return "the kiln instances did not report healthy (kiln-ready.service)"


def console_status(console: str) -> tuple[bool | None, str]:
    """(True, the kiln-ready line's ports), (False, what the guest reports did not come up),
    or (None, how far the boot got) from the serial console's text."""
    if match := READY.search(console):
        return True, match[1]
    if match := NOT_READY.search(console):
        return False, f"the guest reports what did not come up: {match[1]}"
    return None, f"no kiln-ready line yet: {what_is_missing(console)}"


def qemu_binary() -> str:
    found = shutil.which("qemu-system-x86_64")
    if not found:
        raise BootError("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    return found


# Seconds of an empty serial console after which a KVM boot is given up for TCG: the
# firmware and the kernel's first lines come within a few seconds when KVM works.
KVM_SILENCE = 60.0


@cache
def accelerator() -> str:
    """'kvm' when a KVM VM can really be created here, else 'tcg'."""
    forced = os.environ.get("KILN_QEMU_ACCEL")
    if forced:
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    # Start a real (tiny) VM: /dev/kvm may open and yet fail to run a vCPU (MSRs refused).
    probe = subprocess.Popen(
        [
            *(qemu_binary(), "-accel", "kvm", "-M", "pc", "-cpu", "host", "-m", "64"),
            *("-nodefaults", "-display", "none", "-S", "-monitor", "stdio"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert probe.stdin is not None
    with contextlib.suppress(OSError):
        probe.stdin.write("cont\n")
        probe.stdin.flush()
        time.sleep(2)
        probe.stdin.write("quit\n")
        probe.stdin.close()
    try:
        probe.wait(30)
    except subprocess.TimeoutExpired:
        probe.kill()
        probe.wait()
    return "kvm" if probe.returncode == 0 else "tcg"


def image_format(image: Path) -> str:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(image)], capture_output=True, text=True
    )
    if info.returncode != 0:
        raise BootError(f"{image}: not a disk image qemu-img reads: {info.stderr.strip()}")
    return json.loads(info.stdout)["format"]


def make_ssh_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kiln-image-boot", "-f", str(key)],
        check=True,
    )
    return key


@dataclass
class VM:
    image: Path
    workdir: Path
    guest_ports: list[int]
    hostname: str = "kiln"
    host: str = "127.0.0.1"  # the host address the forwarded ports listen on
    memory_mb: int = 1536
    cpus: int = 2
    ports: dict[int, int] = field(default_factory=dict)  # guest port -> host port
    process: subprocess.Popen | None = None
    ssh_key: Path | None = None  # made at start unless given
    started: float = 0.0
    # "nvme": the root disk on an NVMe controller, as EC2's Nitro instances present it.
    disk: str = "virtio"
    network: list[str] = field(default_factory=list)  # more `-netdev user` options: net=, ...
    nocloud: bool = True  # attach the NoCloud seed (an EC2 image reads a metadata service)
    imds: Any = None  # an EC2 boot's metadata stand-in (kiln/images/imds.py), stopped with it
    machine: list[str] = field(default_factory=list)  # more qemu options (-smbios ...)
    accel: str = ""  # the accelerator of the running VM, set at start

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    @property
    def monitor_socket(self) -> Path:
        return self.workdir / "monitor.sock"

    def disk_arguments(self, overlay: Path, seed_iso: Path | None) -> list[str]:
        if self.disk == "nvme":
            drives = ["-drive", f"file={overlay},format=qcow2,if=none,id=root"]
            drives += ["-device", "nvme,serial=kiln-root,drive=root"]
        else:
            drives = ["-drive", f"file={overlay},format=qcow2,if=virtio"]
        if seed_iso is not None:
            drives += ["-drive", f"file={seed_iso},format=raw,if=virtio,readonly=on"]
        return drives

    def command(self, overlay: Path, seed_iso: Path | None) -> list[str]:
        forwards = [f"hostfwd=tcp:{self.host}:{host}-:{g}" for g, host in self.ports.items()]
        netdev = ",".join(["user", "id=net0", *forwards, *self.network])
        accel = self.accel = accelerator()
        return [
            qemu_binary(),
            "-name",
            f"kiln-{self.hostname}",
            "-accel",
            accel,
            *(["-cpu", "max"] if accel == "tcg" else ["-cpu", "host"]),
            "-m",
            str(self.memory_mb),
            "-smp",
            str(self.cpus),
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            f"file:{self.console}",
            "-monitor",
            f"unix:{self.monitor_socket},server,nowait",
            *self.machine,
            *self.disk_arguments(overlay, seed_iso),
            "-netdev",
            netdev,
            "-device",
            "virtio-net-pci,netdev=net0",
        ]

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        overlay = self.workdir / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                str(self.image.resolve()),
                "-F",
                image_format(self.image),
                str(overlay),
            ],
            check=True,
        )
        if self.ssh_key is None:
            self.ssh_key = make_ssh_key(self.workdir)
        public = self.ssh_key.with_suffix(".pub").read_text()
        seed_iso = None
        if self.nocloud:
            seed_iso = seed.write_seed(self.workdir / "seed", [public], self.hostname)
        wanted = [p for p in [SSH_PORT, *self.guest_ports] if p not in self.ports]
        self.ports.update(zip(wanted, free_ports(len(wanted)), strict=True))
        self.console.write_text("")
        self.started = time.monotonic()
        log = open(self.workdir / "qemu.log", "wb")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            self.command(overlay, seed_iso), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def console_tail(self, lines: int = 30) -> str:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return "\n".join(f"  | {line}" for line in text.splitlines()[-lines:])

    def wait_ready(self, timeout: float) -> dict[str, int]:
        """Wait for the guest's readiness line; answer its ports (guest side)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.console.read_text(errors="replace") if self.console.exists() else ""
            if not text and self.accel == "kvm" and self.ready_seconds() > KVM_SILENCE:
                self._restart_without_kvm()
                deadline = time.monotonic() + timeout
                continue
            if match := READY.search(text):
                return json.loads(match[1])
            if match := NOT_READY.search(text):
                raise BootError(
                    f"the guest reports what did not come up: {match[1]}\n"
                    f"serial log tail ({self.console}):\n{self.console_tail()}"
                )
            if self.process and self.process.poll() is not None:
                qemu_log = (self.workdir / "qemu.log").read_text(errors="replace")[-2000:]
                raise BootError(f"qemu exited ({self.process.returncode}): {qemu_log}")
            if time.monotonic() > deadline:
                raise BootError(
                    f"no readiness line (kiln-ready) within {timeout:.0f} s: "
                    f"{self._what_is_missing(text)}\n"
                    f"serial log tail ({self.console}):\n{self.console_tail()}"
                )
            time.sleep(1)

    def _restart_without_kvm(self) -> None:
        """Some hosts open /dev/kvm and run a probe VM, and then a real guest prints nothing
        at all: after KVM_SILENCE seconds of an empty console, boot again under TCG (and use
        TCG for the rest of this process), saying so."""
        print(
            f"kiln: no console output under KVM in {KVM_SILENCE:.0f} s; booting again under "
            "TCG (set KILN_QEMU_ACCEL to choose)",
            file=sys.stderr,
        )
        imds, self.imds = self.imds, None  # an EC2 boot's metadata stand-in stays up
        self.stop(timeout=5)
        self.imds = imds
        os.environ["KILN_QEMU_ACCEL"] = "tcg"
        accelerator.cache_clear()
        self.start()

    def _what_is_missing(self, console: str) -> str:
        return what_is_missing(console)

    def ready_seconds(self) -> float:
        return time.monotonic() - self.started

    def ssh_command(self, *remote: str, user: str = seed.USER) -> list[str]:
        assert self.ssh_key is not None
        return [
            "ssh",
            "-i",
            str(self.ssh_key),
            "-p",
            str(self.ports[SSH_PORT]),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            f"{user}@127.0.0.1",
            *remote,
        ]

    def ssh(self, *remote: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.ssh_command(*remote), capture_output=True, text=True)
        if check and result.returncode != 0:
            raise BootError(f"ssh {' '.join(remote)}: exit {result.returncode}: {result.stderr}")
        return result

    def credentials(self) -> dict[str, dict[str, str]]:
        """The credentials generated in the guest at first boot, read over SSH."""
        result = self.ssh("sudo", "/opt/kiln/venv/bin/kiln", "image", "guest", "credentials")
        return json.loads(result.stdout)

    def stop(self, timeout: float = 30) -> None:
        """ACPI power-off, then kill if the guest does not stop in time."""
        if self.process and self.process.poll() is None:
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as monitor:
                monitor.connect(str(self.monitor_socket))
                monitor.sendall(b"system_powerdown\n")
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait()
        if self.imds is not None:  # what the VM used goes with it
            self.imds.stop()
            self.imds = None


@contextlib.contextmanager
def booted(image: Path, workdir: Path, guest_ports: list[int], hostname: str) -> Iterator[VM]:
    vm = VM(image, workdir, guest_ports, hostname)
    try:
        vm.start()
        yield vm
    finally:
        vm.stop(timeout=20)
