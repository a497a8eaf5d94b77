import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.shacache.entries import Entry
from kiln.shacache.storage import (
    BlobNotFound,
    DiskBlobStore,
    DiskDirStore,
    HashMismatch,
    StorageFull,
    TooLarge,
)

pytestmark = pytest.mark.unit


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_blob_is_stored_under_its_hash_with_fan_out(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    writer = store.writer()
    writer.write(b"hello ")
    writer.write(b"world")
    digest = writer.commit()
    assert digest == hashlib.sha512(b"hello world").hexdigest()
    path = store.path_for(digest)
    assert path.read_bytes() == b"hello world"
    assert path.parent.parent.parent == tmp_path / "shacache"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_hash_mismatch_and_size_limit_leave_nothing(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    writer = store.writer()
    writer.write(b"data")
    with pytest.raises(HashMismatch):
        writer.commit("0" * 128)
    writer = store.writer(max_size=3)
    with pytest.raises(TooLarge):
        writer.write(b"data")
    writer.abort()
    assert files_under(tmp_path) == []


def test_identical_blobs_are_stored_once(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    writers = [store.writer() for _ in range(3)]
    for writer in writers:
        writer.write(b"same bytes")
    digests = {writer.commit() for writer in writers}
    assert len(digests) == 1
    assert len(files_under(tmp_path)) == 1


def test_stale_uploads_from_a_killed_process_are_removed(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    store.writer().write(b"half an upload")  # never committed: as if the process died
    assert store.remove_stale_uploads() == 1
    assert files_under(tmp_path) == []


def test_entries_are_append_only_newest_last_without_duplicates(tmp_path: Path) -> None:
    dirs = DiskDirStore(tmp_path)
    first, second = Entry('{"sha512": "1"}', "a:QUJD"), Entry('{"sha512": "2"}', "a:QUJD")
    assert dirs.read("pypi:x=1") is None
    assert dirs.append("pypi:x=1", first)
    assert dirs.append("pypi:x=1", second)
    assert not dirs.append("pypi:x=1", first)
    assert dirs.read("pypi:x=1") == [first, second]
    assert [key for key, _ in dirs.iter_keys()] == ["pypi:x=1"]


def test_the_on_disk_format_is_the_one_existing_roots_hold(tmp_path: Path) -> None:
    DiskDirStore(tmp_path).append("pypi:x=1", Entry('{"sha512": "1"}', "a:QUJD"))
    name = hashlib.sha256(b"pypi:x=1").hexdigest()
    stored = (tmp_path / "shadir" / name[:2] / f"{name}.json").read_bytes()
    assert stored == b'{"key": "pypi:x=1", "entries": [["{\\"sha512\\": \\"1\\"}", "a:QUJD"]]}'
    blobs = DiskBlobStore(tmp_path)
    writer = blobs.writer()
    writer.write(b"blob")
    digest = writer.commit()
    assert (tmp_path / "shacache" / digest[:2] / digest[2:4] / digest).read_bytes() == b"blob"
    assert [(b.sha512, b.size) for b in blobs.iter_blobs()] == [(digest, 4)]
    blobs.remove(digest)
    with pytest.raises(BlobNotFound):
        blobs.open(digest)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), so that ENOSPC comes from the kernel."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)])
    if result.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_raises_storage_full_and_leaves_no_debris(small_disk: Path) -> None:
    store = DiskBlobStore(small_disk)
    writer = store.writer()
    with pytest.raises(StorageFull):
        for _ in range(40):
            writer.write(b"x" * 65536)
    assert files_under(small_disk) == []
    # Space is back: the next write works.
    writer = store.writer()
    writer.write(b"small")
    with store.open(writer.commit()) as blob:
        assert blob.read() == b"small"


def test_read_json_is_json_dumps_of_the_entries_with_or_without_parsing(tmp_path: Path) -> None:
    import json

    store = DiskDirStore(tmp_path)
    assert store.read_json("pypi:x=1") is None
    entries = [Entry(json.dumps({"sha512": "1" * 128, "é": "\u2603"}), "a:QUJD"), Entry("{}", "")]
    for entry in entries:
        store.append("pypi:x=1", entry)
    expected = json.dumps([e.as_pair() for e in entries]).encode()
    assert store.read_json("pypi:x=1") == expected
    # A file laid out otherwise (by hand, another version) is parsed, with the same answer.
    path = store.path_for("pypi:x=1")
    path.write_text(json.dumps({"entries": [e.as_pair() for e in entries], "key": "pypi:x=1"}))
    assert store.read_json("pypi:x=1") == expected
