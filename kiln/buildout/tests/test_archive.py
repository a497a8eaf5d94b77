"""Packing a part and unpacking it elsewhere: relocation and refusals."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from kiln.buildout.part_archive import ArchiveError, pack_part, unpack_part

pytestmark = pytest.mark.unit


def make_part(root: Path) -> Path:
    part = root / "parts" / "tool"
    (part / "bin").mkdir(parents=True)
    script = part / "bin" / "tool"
    script.write_text(f"#!{part}/bin/python\nprint('hi')\n")
    script.chmod(0o755)
    (part / "lib").mkdir()
    (part / "lib" / "data.bin").write_bytes(b"\x00\x01binary without paths")
    (part / "bin" / "python").symlink_to("/usr/bin/python3")
    (part / "lib" / "self").symlink_to(f"{part}/bin/tool")
    pycache = part / "lib" / "__pycache__"
    pycache.mkdir()
    (pycache / "x.cpython-311.pyc").write_bytes(f"\x00{part}".encode())
    return part


def test_pack_then_unpack_elsewhere_relocates_text_and_links(tmp_path: Path) -> None:
    built = tmp_path / "a"
    part = make_part(built)
    packed = pack_part([str(part)], built, tmp_path)
    assert packed.relocatable and packed.paths == ["parts/tool"]

    other = tmp_path / "b"
    other.mkdir()
    installed = unpack_part(packed.archive, packed.paths, other, str(built.resolve()), True)
    moved = other / "parts" / "tool"
    assert installed == [str(moved)]
    assert (moved / "bin" / "tool").read_text().startswith(f"#!{moved}/bin/python")
    assert os.access(moved / "bin" / "tool", os.X_OK)
    assert os.readlink(moved / "lib" / "self") == f"{moved}/bin/tool"
    assert os.readlink(moved / "bin" / "python") == "/usr/bin/python3"
    assert not (moved / "lib" / "__pycache__").exists()  # byte code embeds paths; not packed


def test_binary_embedding_the_build_directory_is_not_relocatable(tmp_path: Path) -> None:
    built = tmp_path / "a"
    part = make_part(built)
    (part / "lib" / "libx.so").write_bytes(b"\x7fELF\x00" + str(built.resolve()).encode())
    packed = pack_part([str(part)], built, tmp_path)
    assert not packed.relocatable
    assert packed.binary_files_with_path == ["parts/tool/lib/libx.so"]
    other = tmp_path / "b"
    other.mkdir()
    with pytest.raises(ArchiveError, match="cannot be moved"):
        unpack_part(packed.archive, packed.paths, other, str(built.resolve()), False)
    # The same directory is fine.
    unpack_part(packed.archive, packed.paths, built, str(built.resolve()), False)


def test_installed_paths_outside_the_buildout_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="outside"):
        pack_part(["/etc/hostname"], tmp_path, tmp_path)


def test_archive_with_path_traversal_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"evil"
        info = tarfile.TarInfo("../../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "evil.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))
    target = tmp_path / "sw"
    target.mkdir()
    with pytest.raises(ArchiveError, match="unsafe"):
        unpack_part(archive, [], target, str(target), True)
    assert not (tmp_path / "escape.txt").exists()


def crafted_archive(path: Path, members: list[tuple[str, str, str | bytes]]) -> Path:
    """An archive of ``(kind, name, data-or-link-target)`` members, as an attacker makes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.linkname = str(payload)
            tar.addfile(info)
    path.write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))
    return path


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        # A link to a directory outside, then a file written through it.
        (
            [("symlink", "parts/x", "{outside}"), ("file", "parts/x/victim", b"owned")],
            "below a link",
        ),
        # A link to a file outside, then a hard link or a file of the same name.
        (
            [("symlink", "parts/x", "{outside}/victim"), ("hardlink", "parts/y", "parts/x")],
            "hard link",
        ),
        ([("symlink", "parts/x", "{outside}/victim"), ("file", "parts/x", b"owned")], "twice"),
        ([("file", "/etc/kiln-test", b"x")], "unsafe member"),
        ([("symlink", "parts/up", "../../../outside")], "climbs out"),
        ([("fifo", "parts/pipe", "")], "special file"),
    ],
)
def test_crafted_archives_are_refused_and_write_nothing_outside(
    tmp_path: Path, members: list, reason: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("intact")
    members = [
        (k, n, p.replace("{outside}", str(outside)) if isinstance(p, str) else p)
        for k, n, p in members
    ]
    archive = crafted_archive(tmp_path / "evil.tar.zst", members)
    target = tmp_path / "sw"
    (target / "parts").mkdir(parents=True)
    with pytest.raises(ArchiveError, match=reason):
        unpack_part(archive, [], target, str(target), True)
    assert (outside / "victim").read_text() == "intact"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


@pytest.mark.parametrize("paths", [["/abs"], ["../dir"], ["parts/../../dir"], [""]])
def test_installed_paths_from_metadata_cannot_name_anything_outside(
    tmp_path: Path, paths: list[str]
) -> None:
    keep = tmp_path / "dir"
    keep.mkdir()
    (keep / "file").write_text("intact")
    archive = crafted_archive(tmp_path / "a.tar.zst", [("file", "parts/ok", b"ok")])
    target = tmp_path / "sw"
    target.mkdir()
    with pytest.raises(ArchiveError, match="installed path"):
        unpack_part(archive, paths, target, str(target), True)
    assert (keep / "file").read_text() == "intact"


def test_installed_paths_below_a_link_are_not_deleted(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    target = tmp_path / "sw"
    (target / "parts").mkdir(parents=True)
    (target / "parts" / "link").symlink_to(outside)
    archive = crafted_archive(tmp_path / "a.tar.zst", [("file", "parts/ok", b"ok")])
    with pytest.raises(ArchiveError, match="below a link"):
        unpack_part(archive, ["parts/link/dir"], target, str(target), True)
    assert (outside / "dir").is_dir()


def test_hard_links_in_a_part_are_packed_as_files(tmp_path: Path) -> None:
    built = tmp_path / "a"
    part = built / "parts" / "tool"
    part.mkdir(parents=True)
    (part / "one").write_bytes(b"same inode")
    os.link(part / "one", part / "two")
    packed = pack_part([str(part)], built, tmp_path)
    other = tmp_path / "b"
    other.mkdir()
    unpack_part(packed.archive, packed.paths, other, str(built.resolve()), True)
    assert (other / "parts" / "tool" / "two").read_bytes() == b"same inode"


def test_a_part_that_installed_nothing_is_not_packed(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    with pytest.raises(ArchiveError, match="installed nothing"):
        pack_part([], tmp_path, tmp_path)
    with pytest.raises(ArchiveError, match="installed nothing"):
        pack_part([str(tmp_path / "parts" / "missing")], tmp_path, tmp_path)


def test_an_entry_that_installs_nothing_is_refused(tmp_path: Path) -> None:
    archive = crafted_archive(tmp_path / "empty.tar.zst", [("dir", "parts/x", "")])
    target = tmp_path / "sw"
    target.mkdir()
    with pytest.raises(ArchiveError, match="installs nothing"):
        unpack_part(archive, ["parts/x"], target, str(target), True)
    with pytest.raises(ArchiveError, match="installs nothing"):
        unpack_part(archive, [], target, str(target), True)
