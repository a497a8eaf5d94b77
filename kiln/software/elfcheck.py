"""A check in the style of SlapOS's `checkSoftware`: do the release's binaries link sanely?

For every ELF file under a software directory:
- ``ldd`` finds every library it needs (no "not found");
- each library it resolves to is either part of the release (under the software directory)
  or one of the few system libraries every Linux system has (libc and friends);
- its RPATH/RUNPATH entries point inside the release, as absolute paths or relative to
  ``$ORIGIN``, and never to a build directory or elsewhere on the machine.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# System libraries a release may link against (the glibc and GCC runtime), as SlapOS allows.
ALLOWED_SYSTEM_LIBRARIES = (
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "linux-vdso.so.1",
    "libc.so.6",
    "libcrypt.so.1",
    "libdl.so.2",
    "libgcc_s.so.1",
    "libm.so.6",
    "libnsl.so.1",
    "libpthread.so.0",
    "libresolv.so.2",
    "librt.so.1",
    "libstdc++.so.6",
    "libutil.so.1",
)

# What a manylinux wheel may link without bundling (PEP 600: the auditwheel policy's
# libraries beyond the ones above), allowed for files installed from wheels only
# (under site-packages): numpy's libgfortran and Pillow's libpng link zlib.  Parts compiled
# by the release itself still may not.
WHEEL_POLICY_LIBRARIES = ("libz.so.1",)

_ELF_MAGIC = b"\x7fELF"
_LDD_LINE = re.compile(r"^\s*(\S+)\s*(?:=>\s*(\S+)?)?")


@dataclass
class Problem:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            return stream.read(4) == _ELF_MAGIC
    except OSError:
        return False


def elf_files(directory: Path) -> list[Path]:
    found = []
    for dirpath, _dirnames, filenames in os.walk(directory):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink() and path.is_file() and is_elf(path):
                found.append(path)
    return sorted(found)


def run_paths(path: Path) -> list[str]:
    """RPATH and RUNPATH entries of an ELF file (readelf -d)."""
    output = subprocess.run(
        ["readelf", "-d", str(path)], capture_output=True, text=True, check=False
    ).stdout
    entries: list[str] = []
    for match in re.finditer(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[(.*)\]", output):
        entries.extend(match.group(1).split(":"))
    return entries


def check_run_paths(path: Path, software_dir: Path) -> list[Problem]:
    problems = []
    for entry in run_paths(path):
        if entry.startswith("$ORIGIN") or entry.startswith("${ORIGIN}"):
            resolved = Path(
                os.path.normpath(
                    entry.replace("${ORIGIN}", "$ORIGIN").replace("$ORIGIN", str(path.parent), 1)
                )
            )
        elif entry.startswith("/"):
            resolved = Path(os.path.normpath(entry))
        else:
            problems.append(Problem(path, f"relative rpath {entry!r} (depends on the cwd)"))
            continue
        if not resolved.is_relative_to(software_dir):
            problems.append(Problem(path, f"rpath {entry!r} points outside the release"))
    return problems


def check_libraries(path: Path, software_dir: Path) -> list[Problem]:
    result = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
    if "not a dynamic executable" in result.stdout + result.stderr:
        return []  # statically linked
    allowed = ALLOWED_SYSTEM_LIBRARIES
    if "site-packages" in path.relative_to(software_dir).parts:
        allowed += WHEEL_POLICY_LIBRARIES
    problems = []
    for line in result.stdout.splitlines():
        match = _LDD_LINE.match(line)
        if not match:
            continue
        name, target = match.group(1), match.group(2)
        if "not found" in line:
            problems.append(Problem(path, f"missing library {name}"))
        elif target and target.startswith("/"):
            resolved = Path(os.path.realpath(target))
            inside = resolved.is_relative_to(software_dir)
            if not inside and Path(target).name not in allowed:
                problems.append(Problem(path, f"links against system library {target}"))
        elif name.startswith("/") and Path(name).name not in ALLOWED_SYSTEM_LIBRARIES:
            problems.append(Problem(path, f"uses unexpected loader {name}"))
    return problems


def check_software(software_dir: Path) -> tuple[list[Path], list[Problem]]:
    """Check every ELF file under ``software_dir``; answer (files checked, problems)."""
    software_dir = software_dir.resolve()
    files = elf_files(software_dir)
    problems: list[Problem] = []
    for path in files:
        problems += check_run_paths(path, software_dir)
        problems += check_libraries(path, software_dir)
    return files, problems
