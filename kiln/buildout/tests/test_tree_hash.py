"""Tree hashes: the same tree in another archive verifies; any other tree is refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kiln.buildout.tree_hash import (
    TreeHashError,
    archive_tree_hash,
    main,
    tree_hash,
    unpack_verified,
)

pytestmark = pytest.mark.unit


def make_archive(
    path: Path, files: dict[str, bytes], top: str = "pkg-1.0", mode: str = "w:gz", mtime: int = 0
) -> Path:
    with tarfile.open(path, mode) as tar:
        directory = tarfile.TarInfo(top)
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, mtime
        tar.addfile(directory)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mtime = len(data), mtime
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


FILES = {"README": b"hello\n", "bin/run": b"#!/bin/sh\necho hi\n", "lib/a.rb": b"x = 1\n"}


def test_the_same_tree_packed_differently_has_the_same_hash(tmp_path: Path) -> None:
    gz = make_archive(tmp_path / "a.tar.gz", FILES)
    xz = make_archive(tmp_path / "b.tar.xz", FILES, top="other-name", mode="w:xz", mtime=10**9)
    assert gz.read_bytes() != xz.read_bytes()
    assert archive_tree_hash(gz) == archive_tree_hash(xz)
    assert archive_tree_hash(gz).startswith("sha256-")


@pytest.mark.parametrize(
    "change",
    [
        {"README": b"hello!\n"},  # content
        {"README2": b"hello\n"},  # a file more
        {"bin/run": None},  # a file less
    ],
)
def test_another_tree_has_another_hash(tmp_path: Path, change: dict) -> None:
    files = {k: v for k, v in {**FILES, **change}.items() if v is not None}
    assert archive_tree_hash(make_archive(tmp_path / "a.tgz", FILES)) != archive_tree_hash(
        make_archive(tmp_path / "b.tgz", files)
    )


def test_the_executable_bit_counts(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "run").write_text("x")
    before = tree_hash(tree)
    (tree / "run").chmod(0o755)
    assert tree_hash(tree) != before


def test_unpack_verified_refuses_a_mismatch_and_leaves_nothing(tmp_path: Path) -> None:
    good = make_archive(tmp_path / "good.tgz", FILES)
    pin = archive_tree_hash(good)
    bad = make_archive(tmp_path / "bad.tgz", {**FILES, "lib/a.rb": b"x = 2\n"})
    with pytest.raises(TreeHashError, match=r"https://example.org/pkg.tgz: .* refused"):
        unpack_verified(bad, tmp_path / "part", pin, "https://example.org/pkg.tgz")
    assert not (tmp_path / "part").exists()
    assert unpack_verified(good, tmp_path / "part", pin, "good") == pin
    assert (tmp_path / "part" / "bin" / "run").read_bytes() == FILES["bin/run"]


def test_unsafe_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.tgz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("../outside")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(TreeHashError, match="cannot be unpacked safely"):
        archive_tree_hash(path)
    assert not (tmp_path.parent / "outside").exists()


def test_the_command_prints_hashes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_archive(tmp_path / "good.tgz", FILES)
    assert main([str(good)]) == 0
    assert capsys.readouterr().out.startswith(archive_tree_hash(good))
