"""The checkSoftware-style ELF check finds what it must: built with gcc, no mocks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.software.elfcheck import check_software

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed"),
]


def compile_program(release: Path, *flags: str) -> Path:
    source = release / "main.c"
    source.write_text("int helper(void);\nint main(void) { return helper(); }\n")
    program = release / "bin" / "program"
    program.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["gcc", "-o", str(program), str(source), f"-L{release / 'lib'}", "-lhelper", *flags],
        check=True,
    )
    return program


def make_library(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "helper.c").write_text("int helper(void) { return 0; }\n")
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-o",
            str(directory / "libhelper.so"),
            str(directory / "helper.c"),
        ],
        check=True,
    )


def test_release_library_found_through_origin_rpath_is_fine(tmp_path: Path) -> None:
    release = tmp_path / "release"
    make_library(release / "lib")
    compile_program(release, "-Wl,-rpath,$ORIGIN/../lib")
    files, problems = check_software(release)
    assert len(files) == 2 and problems == []


def test_missing_library_and_outside_rpath_are_reported(tmp_path: Path) -> None:
    release = tmp_path / "release"
    make_library(release / "lib")
    compile_program(release, f"-Wl,-rpath,{tmp_path / 'build-dir'}")
    (release / "lib" / "libhelper.so").unlink()
    _files, problems = check_software(release)
    messages = [p.message for p in problems]
    assert any("points outside the release" in m for m in messages)
    assert "missing library libhelper.so" in messages


def test_system_library_outside_the_allowed_list_is_reported(tmp_path: Path) -> None:
    if not Path("/lib/x86_64-linux-gnu/libz.so.1").exists():
        pytest.skip("no system libz")
    release = tmp_path / "release"
    make_library(release / "lib")
    compile_program(release, "-Wl,-rpath,$ORIGIN/../lib", "-Wl,--no-as-needed", "-lz")
    _files, problems = check_software(release)
    assert any(
        "links against system library" in p.message and "libz" in p.message for p in problems
    )


def test_a_wheels_library_may_link_zlib_as_the_manylinux_policy_allows(tmp_path: Path) -> None:
    if not Path("/lib/x86_64-linux-gnu/libz.so.1").exists():
        pytest.skip("no system libz")
    release = tmp_path / "release"
    wheel_libs = release / "parts" / "venv" / "lib" / "python3.11" / "site-packages" / "x.libs"
    wheel_libs.mkdir(parents=True)
    (wheel_libs / "z.c").write_text("int helper(void) { return 0; }\n")
    library = wheel_libs / "libz-user.so"
    source = str(wheel_libs / "z.c")
    flags = ["-shared", "-fPIC", "-Wl,--no-as-needed", "-lz"]
    subprocess.run(["gcc", "-o", str(library), source, *flags], check=True)
    files, problems = check_software(release)
    assert files == [library] and problems == []
