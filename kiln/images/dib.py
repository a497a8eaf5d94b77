"""Run diskimage-builder's `disk-image-create`: environment, progress per phase, full log.

diskimage-builder prints every hook it runs (``dib-run-parts Running .../install.d/60-x``);
that is turned into one progress line per phase and per script, and the full output is kept
in a log file.  A failure names the phase and the element whose script failed, and the log.

Hosts whose kernel has no device-mapper (no ``/dev/mapper/control``) cannot run DIB's
``kpartx``/``dmsetup`` steps: there, and only there, ``kiln/images/shims`` comes first on
DIB's PATH, where ``kpartx`` maps partitions with ``losetup -o OFFSET --sizelimit LEN``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SHIMS = Path(__file__).parent / "shims"
HOOK = re.compile(r"dib-run-parts Running (\S+)/([a-z-]+)\.d/(\S+)")
PHASE = re.compile(r"Running hooks from \S+/([a-z-]+)\.d")
# Steps that are not hooks, named as the phase they belong to.
MILESTONES = {
    "Building elements:": "elements",
    "Getting value for [image-block-device]": "block-device",
    "Converting image using qemu-img convert": "convert",
    "Build completed successfully": "done",
}


class DibError(Exception):
    """disk-image-create failed; the message names the phase, the element and the log."""


def disk_image_create() -> str:
    """The disk-image-create of this Python's environment (pip installs it beside kiln)."""
    beside = Path(sys.executable).parent / "disk-image-create"
    found = str(beside) if beside.exists() else shutil.which("disk-image-create")
    if not found:
        raise DibError(
            "disk-image-create not found: pip install 'diskimage-builder' "
            "(the version pinned in kiln's pyproject.toml)"
        )
    return found


def has_device_mapper() -> bool:
    # /proc/misc, not /dev/mapper/control: a failed dmsetup leaves that node behind.
    return "device-mapper" in _proc_misc()


def _proc_misc() -> str:
    try:
        return Path("/proc/misc").read_text()
    except OSError:
        return ""


def dib_elements_dir() -> Path:
    import diskimage_builder

    return Path(diskimage_builder.__file__).parent / "elements"


def element_of(script: str, phase: str, elements_path: Sequence[Path]) -> str:
    """Which element holds ``<phase>.d/<script>`` (DIB flattens hooks into one folder)."""
    for root in [*elements_path, dib_elements_dir()]:
        for element in sorted(root.iterdir()) if root.is_dir() else []:
            if (element / f"{phase}.d" / script).exists():
                return element.name
    return "?"


@dataclass
class DibRun:
    """One disk-image-create invocation."""

    elements: list[str]
    output: Path  # image path without extension
    types: list[str]
    elements_path: list[Path]
    environment: dict[str, str] = field(default_factory=dict)
    architecture: str = "amd64"
    log_path: Path | None = None

    def command(self) -> list[str]:
        return [
            disk_image_create(),
            "-a",
            self.architecture,
            "-o",
            str(self.output),
            "-t",
            ",".join(self.types),
            *self.elements,
        ]

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        # This machine's pip settings name its own paths and mirrors: not the image's.
        env = {k: v for k, v in base.items() if not k.startswith("PIP_")}
        env.update(self.environment)
        env["ELEMENTS_PATH"] = ":".join(str(p) for p in self.elements_path)
        bin_dir = str(Path(sys.executable).parent)
        path = [bin_dir, env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")]
        if not has_device_mapper():
            if os.geteuid() != 0:
                raise DibError("this kernel has no device-mapper: run `kiln image build` as root")
            path.insert(0, str(SHIMS))
        env["PATH"] = ":".join(path)
        return env

    def run(self, progress: Callable[[str], None], base_env: Mapping[str, str] | None = None):
        """Run DIB; call ``progress`` with one line per phase and script; raise DibError."""
        log_path = self.log_path or self.output.with_suffix(".dib.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.env(base_env if base_env is not None else os.environ)
        state = _Progress(self.elements_path, progress)
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                self.command(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                errors="replace",
                start_new_session=True,
            )
            assert process.stdout is not None
            try:
                for line in process.stdout:
                    log.write(line)
                    state.feed(line)
            except BaseException:
                # Ctrl-C or an error here: DIB's own exit handler unmounts and detaches.
                _interrupt(process)
                raise
            code = process.wait()
        if code != 0:
            raise DibError(
                f"disk-image-create failed in {state.where()} (exit {code}); full log: "
                f"{log_path}\n" + "\n".join(f"  | {line}" for line in state.tail[-15:])
            )
        return log_path


@dataclass
class _Progress:
    """Turns DIB's output into progress lines, and remembers where it is for errors."""

    elements_path: list[Path]
    progress: Callable[[str], None]
    phase: str = "start"
    script: str = ""
    element: str = ""
    tail: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def where(self) -> str:
        if self.script:
            return f"phase {self.phase}, element {self.element} ({self.script})"
        return f"phase {self.phase}"

    def feed(self, line: str) -> None:
        self.tail = [*self.tail[-40:], line.rstrip()]
        elapsed = f"{time.monotonic() - self.started:6.0f}s"
        if match := HOOK.search(line):
            self.phase, self.script = match[2], match[3]
            self.element = element_of(self.script, self.phase, self.elements_path)
            self.progress(f"{elapsed}  {self.phase:<13} {self.element}/{self.script}")
        elif match := PHASE.search(line):
            self.phase, self.script, self.element = match[1], "", ""
        else:
            for marker, name in MILESTONES.items():
                if marker in line:
                    self.phase, self.script, self.element = name, "", ""
                    self.progress(f"{elapsed}  {name}")


def _interrupt(process: subprocess.Popen, timeout: float = 120) -> None:
    """SIGINT to DIB's process group (its cleanup runs), then SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
