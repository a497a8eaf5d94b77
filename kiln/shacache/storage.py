"""Content-addressed storage: two small interfaces, and their implementation on a disk.

The server and the garbage collector use only :class:`BlobStore` (blobs named by their
sha512) and :class:`DirStore` (signed entries by key), which :func:`open_stores` gives; a
backend other than a local directory (an object store) implements those two.

On disk (:class:`DiskBlobStore`, :class:`DiskDirStore`), everything is below ``--root``::

    shacache/ab/cd/abcd...      blobs, named by their sha512, two levels of fan-out
    shadir/ef/ef01....json      entries of one key, in a file named by sha256(key)
    tmp/                        uploads in progress (same filesystem, so rename is atomic)

Every write goes to a temporary file, is fsynced, then renamed into place, and the directory
is fsynced: a killed server or a broken upload leaves no partial blob, only a temp file that
the next start removes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kiln.common.durable import fsync_directory
from kiln.shacache.entries import Entry, check_dir_key, is_sha512

WRITEBACK_WINDOW = 32 << 20
_ENCODER = json.JSONEncoder()  # json.dumps's defaults


class StorageFull(OSError):
    """The disk is full: the write was undone and nothing was left behind."""


class HashMismatch(ValueError):
    pass


class TooLarge(ValueError):
    pass


class BlobNotFound(LookupError):
    pass


@dataclass(frozen=True)
class BlobInfo:
    sha512: str
    size: int
    modified: float  # seconds since the epoch, when the blob was stored


class BlobWriter(ABC):
    """Receives one upload in pieces; hashes it as it goes, never holding it whole."""

    size: int  # bytes received so far

    @abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Add a piece; raises TooLarge past the limit, StorageFull when out of space."""

    @abstractmethod
    def commit(self, expected_sha512: str | None = None) -> str:
        """Make the blob durable and visible; answer its sha512 (HashMismatch if unexpected)."""

    @abstractmethod
    def abort(self) -> None:
        """Drop the upload; nothing of it stays."""


class BlobStore(ABC):
    """Blobs named by their sha512: written once, read many times, removed by gc."""

    @abstractmethod
    def writer(self, max_size: int | None = None) -> BlobWriter: ...

    @abstractmethod
    def open(self, sha512: str) -> BinaryIO:
        """The blob as a readable, seekable file; raises BlobNotFound."""

    @abstractmethod
    def iter_blobs(self) -> Iterator[BlobInfo]: ...

    @abstractmethod
    def remove(self, sha512: str) -> None:
        """Remove a blob (gone already is fine)."""

    @abstractmethod
    def remove_stale_uploads(self) -> int:
        """Drop uploads that a killed process left unfinished; answer how many."""


class DirStore(ABC):
    """Append-only lists of entries per key, newest last, exact duplicates stored once."""

    @abstractmethod
    def read(self, key: str) -> list[Entry] | None:
        """The entries of ``key``, or None when it has none."""

    def read_json(self, key: str) -> bytes | None:
        """The entries of ``key`` as the wire protocol answers them: the bytes of
        ``json.dumps([[metadata, signature], ...])``; None when it has none."""
        entries = self.read(key)
        if entries is None:
            return None
        # One short encoder call per entry rather than one for the whole list: the C encoder
        # holds the GIL as long as a call lasts (0.2 s for 100,000 entries), and the server's
        # event loop needs it meanwhile.
        encode = _ENCODER.encode
        return ("[" + ", ".join([encode(e.as_pair()) for e in entries]) + "]").encode()

    @abstractmethod
    def append(self, key: str, entry: Entry) -> bool:
        """Add an entry; answer False when the exact same entry was already there.

        The caller serialises appends to one key (one writer per process).
        """

    @abstractmethod
    def iter_keys(self) -> Iterator[tuple[str, list[Entry]]]: ...


def open_stores(root: Path) -> tuple[BlobStore, DirStore]:
    """The stores of a cache root (the one place that picks a backend)."""
    return DiskBlobStore(root), DiskDirStore(root)


def _raise_if_full(error: OSError) -> None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise StorageFull(error.errno, "no space left on the cache's disk") from error


class DiskBlobWriter(BlobWriter):
    """Writes to a temporary file in ``tmp/``, renamed to the blob's path on commit."""

    def __init__(self, store: DiskBlobStore, max_size: int | None) -> None:
        self._store = store
        self._max_size = max_size
        self._hash = hashlib.sha512()
        self.size = 0
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._temp_path = Path(name)
        self._closed = False
        self._written_back = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.size += len(data)
        if self._max_size is not None and self.size > self._max_size:
            raise TooLarge(f"the body is over the size limit of {self._max_size} bytes")
        self._hash.update(data)
        try:
            self._file.write(data)
            self._start_writeback()
        except OSError as error:
            self.abort()
            _raise_if_full(error)
            raise

    def _start_writeback(self) -> None:
        """Start writing earlier pieces to disk now, so the final fsync has little left to do.

        The kernel would otherwise hold a whole multi-GiB upload in dirty pages and flush it
        all in the fsync after the last byte.  POSIX_FADV_DONTNEED starts that writeback
        without waiting, and keeps a large upload from evicting the page cache.
        """
        if self.size - self._written_back >= WRITEBACK_WINDOW:
            os.posix_fadvise(self._file.fileno(), self._written_back, 0, os.POSIX_FADV_DONTNEED)
            self._written_back = self.size

    def commit(self, expected_sha512: str | None = None) -> str:
        digest = self._hash.hexdigest()
        if expected_sha512 is not None and digest != expected_sha512:
            self.abort()
            raise HashMismatch(
                f"the body hashes to {digest[:16]}..., not to the name {expected_sha512[:16]}..."
            )
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            self._closed = True
            final = self._store.path_for(digest)
            if final.exists():
                # Same content, already stored: the upload is idempotent.
                self._temp_path.unlink()
                return digest
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._temp_path, final)
            fsync_directory(final.parent)
        except OSError as error:
            self.abort()
            _raise_if_full(error)
            raise
        return digest

    def abort(self) -> None:
        if not self._closed:
            self._file.close()
            self._closed = True
        self._temp_path.unlink(missing_ok=True)


@dataclass
class DiskBlobStore(BlobStore):
    root: Path

    def __post_init__(self) -> None:
        self.blob_dir = self.root / "shacache"
        self.tmp_dir = self.root / "tmp"
        for directory in (self.blob_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def remove_stale_uploads(self) -> int:
        count = 0
        for leftover in self.tmp_dir.iterdir():
            leftover.unlink(missing_ok=True)
            count += 1
        return count

    def path_for(self, sha512: str) -> Path:
        if not is_sha512(sha512):
            raise ValueError(f"not a sha512: {sha512[:40]!r}")
        return self.blob_dir / sha512[:2] / sha512[2:4] / sha512

    def writer(self, max_size: int | None = None) -> DiskBlobWriter:
        return DiskBlobWriter(self, max_size)

    def open(self, sha512: str) -> BinaryIO:
        try:
            return open(self.path_for(sha512), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(sha512) from None

    def iter_blobs(self) -> Iterator[BlobInfo]:
        for path in self.blob_dir.glob("??/??/*"):
            if not is_sha512(path.name):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed since the listing
                continue
            yield BlobInfo(path.name, stat.st_size, stat.st_mtime)

    def remove(self, sha512: str) -> None:
        self.path_for(sha512).unlink(missing_ok=True)


@dataclass
class DiskDirStore(DirStore):
    """One JSON file per key: ``{"key": KEY, "entries": [[metadata, signature], ...]}``."""

    root: Path

    def __post_init__(self) -> None:
        self.dir_root = self.root / "shadir"
        self.tmp_dir = self.root / "tmp"
        for directory in (self.dir_root, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        # The file is named by a hash of the key: no key can name a path outside the store.
        digest = hashlib.sha256(check_dir_key(key).encode()).hexdigest()
        return self.dir_root / digest[:2] / f"{digest}.json"

    def read(self, key: str) -> list[Entry] | None:
        path = self.path_for(key)
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        return [Entry(text, signature) for text, signature in document["entries"]]

    def _document_head(self, key: str) -> bytes:
        return b'{"key": ' + json.dumps(key).encode() + b', "entries": '

    def read_json(self, key: str) -> bytes | None:
        """The list as stored, cut out of the file: no parsing, no encoding.

        :meth:`append` writes ``json.dumps({"key": KEY, "entries": [...]})``, whose entries
        part is byte for byte ``json.dumps([...])``; a file written otherwise is parsed.
        """
        try:
            raw = self.path_for(key).read_bytes()
        except FileNotFoundError:
            return None
        head = self._document_head(key)
        if raw.startswith(head) and raw.endswith(b"}"):
            return raw[len(head) : -1]
        return super().read_json(key)

    def append(self, key: str, entry: Entry) -> bool:
        entries = self.read(key) or []
        if entry in entries:
            return False
        entries.append(entry)
        document = {"key": key, "entries": [e.as_pair() for e in entries]}
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="entry-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(document).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp_name, path)
            fsync_directory(path.parent)
        except OSError as error:
            Path(temp_name).unlink(missing_ok=True)
            _raise_if_full(error)
            raise
        return True

    def iter_keys(self) -> Iterator[tuple[str, list[Entry]]]:
        for path in self.dir_root.glob("??/*.json"):
            document = json.loads(path.read_bytes())
            yield document["key"], [Entry(t, s) for t, s in document["entries"]]
