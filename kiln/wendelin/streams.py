"""Data streams, the write side: durable, append-only logs with exactly-once appends and group
commit. The read side is ``stream_reader``; only the router (``router.py``) writes.

Each stream is a directory holding:

* ``data``: the stored bytes, exactly as readers see them (concatenated msgpack
  ``[time, record]`` entries, or arbitrary bytes for a raw upload stream);
* ``index``: one fixed-size, CRC-protected record per committed chunk (end offset, entry total,
  time range, commit time, dedup key);
* ``meta.json``: the stream's kind and owning policy, written once at creation.

A commit writes and fsyncs ``data`` first, then the index records, then fsyncs ``index``. The
index is the commit point: bytes of ``data`` past the last valid index record are a torn tail,
never served, and cut off when the stream is opened. Because each index record carries the
chunk's dedup key, the dedup table is durable exactly when the data is, and is rebuilt from the
index on open (no separate file can disagree with the data after a crash).

An append that finds no commit on disk goes to a disk thread at once; appends that arrive while
a commit is on disk queue up and go out together in the next one (group commit). An HTTP
body's entries are checked on the event loop after its commit has started, so the check runs
while the bytes are written and flushed; they are indexed only if it passes. A refused chunk
is never indexed, so it is never visible, and the rest of its commit is written again without
it.
"""

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import logging
import math
import os
import re
import struct
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import xxhash

from kiln.common.durable import fsync_directory
from kiln.wendelin.chunks import Chunk
from kiln.wendelin.refusals import Unavailable
from kiln.wendelin.stream_reader import (
    ENTRIES,
    RAW,
    CommittedChunks,
    StoreReader,
    StreamKindError,
    StreamReader,
)

log = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
NO_KEY = bytes(32)
# Content keys (see content_key) start with this; the rest of a key is a chunk id's hash.
_CONTENT_KEY_TAG = b"content/xxh3-128"
# Remembered chunk keys per stream (about 140 bytes each), besides the retention window.
MAX_DEDUP_KEYS = 1_000_000
# A stream's files are closed after this long unused (they reopen on the next use).
IDLE_FILES_SECONDS = 60.0
_MAGIC = b"WDS1"
# magic, end offset, entries in total, min time, max time, commit time, dedup key, crc32
_RECORD = struct.Struct("<4sQQddd32sI")
_CRC_SPAN = _RECORD.size - 4
# Errors of a full or failing disk: answered with 503, the client retries later.
# Out of descriptors (EMFILE, ENFILE) too: it passes once other streams' files are closed.
_TRANSIENT_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EIO,
    errno.EROFS,
    errno.ENOMEM,
    errno.EMFILE,
    errno.ENFILE,
}


class StreamUnavailable(Unavailable):
    """The store cannot take data now (full disk, overload, shutting down): retry later."""


@dataclass(slots=True)
class _Pending:
    data: bytes
    key: bytes
    future: asyncio.Future[bool] = field(repr=False)
    chunk: Chunk | None = None  # None until ``check`` passes
    check: concurrent.futures.Future[Chunk] | None = field(default=None, repr=False)
    refusal: BaseException | None = None  # what ``check`` raised


_Record = tuple[int, int, float, float, float]  # end, entries in total, times: min, max, commit


@dataclass(slots=True)
class _Commit:
    """Chunks on their way to disk together, and the disk thread's answer to come."""

    batch: list[_Pending]
    writing: asyncio.Future[tuple[list[_Pending], list[_Record]]]


def content_key(data: bytes) -> bytes:
    """The key of a chunk that is a retry exactly when its bytes repeat (an HTTP resend).

    A fast hash (about 30x faster than SHA-256 here, so it adds nothing measurable to an
    acknowledgement), safe because a match is confirmed by comparing the bytes.
    """
    return _CONTENT_KEY_TAG + xxhash.xxh3_128_digest(data)


def check_stream_name(name: str) -> str:
    if not STREAM_NAME.match(name) or ".." in name:
        raise ValueError(
            f"{name!r} cannot name a stream: use letters, digits, '.', '_' and '-' "
            "(at most 200, starting with a letter or digit)"
        )
    return name


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class StreamFiles:
    """One stream's ``data`` and ``index`` descriptors, opened on use, closed when idle.

    Holding two descriptors per stream for ever let a policy that creates streams exhaust
    the process's file limit (and then the service could not restart). Streams in use stay
    open; the least recently used idle ones are closed past ``FileCache.limit``, and any idle
    for a minute by ``FileCache.close_idle``. ``use()`` may run in any thread.
    """

    def __init__(self, path: str, cache: "FileCache") -> None:
        self._paths = (os.path.join(path, "data"), os.path.join(path, "index"))
        self._cache = cache
        self._lock = threading.Lock()
        self._fds: tuple[int, int] | None = None
        self._users = 0
        self.last_used = 0.0

    @contextlib.contextmanager
    def use(self) -> Iterator[tuple[int, int]]:
        """(data fd, index fd), never closed while a ``use()`` is open."""
        with self._lock:
            opened = self._fds is None
            if self._fds is None:
                data_fd = os.open(self._paths[0], os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    index_fd = os.open(self._paths[1], os.O_RDWR | os.O_CREAT, 0o600)
                except BaseException:
                    os.close(data_fd)
                    raise
                self._fds = (data_fd, index_fd)
            self._users += 1
            fds = self._fds
        try:
            self._cache.used(self, opened)
            yield fds
        finally:
            with self._lock:
                self._users -= 1
                self.last_used = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._fds is None

    def close_if_idle(self, force: bool = False) -> bool:
        """Close the descriptors unless in use (``force``: wait for the lock); True if closed.

        Never waits for a busy stream's lock unless forced, so that closing others from
        ``use()`` cannot deadlock with a thread using them.
        """
        if not self._lock.acquire(blocking=force):
            return False
        try:
            if self._fds is None or self._users:
                return False
            for descriptor in self._fds:
                os.close(descriptor)
            self._fds = None
            return True
        finally:
            self._lock.release()


class FileCache:
    """The streams whose files are open, least recently used first, at most ``limit`` idle."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the limit of streams with open files must be >= 1, not {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._open: OrderedDict[StreamFiles, None] = OrderedDict()

    def used(self, files: StreamFiles, opened: bool) -> None:
        with self._lock:
            self._open[files] = None
            self._open.move_to_end(files)
            if not opened or len(self._open) <= self.limit:
                return
            oldest = list(self._open)[: len(self._open) - self.limit]
        for old in oldest:
            if old is not files and old.close_if_idle():
                self._closed(old)

    def close_idle(self, idle_seconds: float) -> None:
        """Close the files of streams unused for ``idle_seconds`` (from the catalog sync)."""
        horizon = time.monotonic() - idle_seconds
        with self._lock:
            stale = [files for files in self._open if files.last_used < horizon]
        for files in stale:
            if files.close_if_idle():
                self._closed(files)

    def _closed(self, files: StreamFiles) -> None:
        with self._lock:
            if files.closed:  # not reopened by another thread meanwhile (it re-added itself)
                self._open.pop(files, None)

    def forget(self, files: StreamFiles) -> None:
        files.close_if_idle(force=True)
        with self._lock:
            self._open.pop(files, None)

    @property
    def open_count(self) -> int:
        return len(self._open)


class StreamWriter:
    """Appends to one data stream. Mutated only from the event loop; disk work runs in
    ``executor``. Each commit is made visible to ``reader`` once its index is fsynced."""

    def __init__(
        self,
        path: str,
        executor: ThreadPoolExecutor,
        dedup_retention: float,
        max_pending_bytes: int,
        files: FileCache,
    ) -> None:
        self.path = path
        self.name = os.path.basename(path)
        with open(os.path.join(path, "meta.json")) as meta_file:
            meta = json.load(meta_file)
        self.kind: str = meta["kind"]
        self.policy: str = meta.get("policy", "")
        self._executor = executor
        self._dedup_retention = dedup_retention
        self._max_pending_bytes = max_pending_bytes
        self._file_cache = files
        self._files = StreamFiles(path, files)
        # What is committed: only this writer adds to it, its reader only reads it.
        self._committed = CommittedChunks()
        self.stats = self._committed.stats
        self.reader = StreamReader(
            self.name, self.kind, self.policy, self._files.use, self._committed
        )
        # Keys of the chunks committed within the retention window: (commit time, chunk number).
        self._dedup: dict[bytes, tuple[float, int]] = {}
        self._in_flight: dict[bytes, _Pending] = {}
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._committer: asyncio.Task[None] | None = None
        # Serialises raw uploads. Entry commits never meet them (a stream has one kind), and
        # are serialised by running one at a time in ``_commit_pending``.
        self._write_lock = asyncio.Lock()
        self.closing = False
        self._recover()

    # -- opening ------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Load the index, drop a torn tail of index or data, and rebuild the dedup table."""
        with self._files.use() as (data_fd, index_fd):
            self._recover_files(data_fd, index_fd)
        self.prune_dedup()

    def _recover_files(self, data_fd: int, index_fd: int) -> None:
        index_size = os.fstat(index_fd).st_size
        data_size = os.fstat(data_fd).st_size
        horizon = time.time() - self._dedup_retention
        valid = 0
        piece_size = _RECORD.size * 65536  # read the index in 5 MiB pieces, not whole
        complete = index_size - index_size % _RECORD.size
        while valid < complete:
            piece = os.pread(index_fd, min(piece_size, complete - valid), valid)
            good = self._load_records(piece, data_size, horizon)
            valid += good
            if good < len(piece) or not piece:
                break
        ends = self._committed.ends
        committed_size = ends[-1] if ends else 0
        if valid != index_size or data_size != committed_size:
            log.warning(
                "stream %s: dropping a torn tail (%d index bytes, %d data bytes) from a crash",
                self.name,
                index_size - valid,
                data_size - committed_size,
            )
            os.ftruncate(index_fd, valid)
            os.ftruncate(data_fd, committed_size)
            os.fsync(index_fd)
            os.fsync(data_fd)
        self._index_size = valid

    def _load_records(self, piece: bytes, data_size: int, horizon: float) -> int:
        """Remember the valid records at the start of ``piece``; how many bytes they span."""
        for number, record in enumerate(_RECORD.iter_unpack(piece)):
            magic, end, total, low, high, committed, key, crc = record
            start = number * _RECORD.size
            if magic != _MAGIC or zlib.crc32(piece[start : start + _CRC_SPAN]) != crc:
                return start
            if end > data_size:
                # Data is fsynced before its index record: only a failing disk gets here.
                log.error(
                    "stream %s: data shorter than its index; keeping what is there", self.name
                )
                return start
            self._committed.add(end, total, low, high, committed)
            if key != NO_KEY and committed >= horizon:
                self._dedup[key] = (committed, len(self._committed.ends) - 1)
        return len(piece)

    def close(self) -> None:
        self._file_cache.forget(self._files)

    # -- appending ----------------------------------------------------------------------------

    def append(self, chunk: Chunk, key: bytes = NO_KEY) -> asyncio.Future[bool]:
        """Queue ``chunk``; the future is True once it is durable, False if it was a duplicate.

        ``key`` identifies a retried chunk (a forward chunk id): a chunk whose key is already
        committed, or being committed, is not appended again.
        """
        repeated = self._repeat_of(key, chunk.data)
        return repeated or self._queue(chunk.data, key, chunk=chunk)

    def append_by_content(
        self, data: bytes, check: Callable[[bytes], Chunk]
    ) -> asyncio.Future[bool]:
        """Like ``append``, for a chunk that is a retry exactly when its bytes are the same
        (an HTTP resend), and that ``check(data)`` has yet to find valid entries in.

        The chunk is queued first, which puts it on its way to disk at once when no commit is
        on disk, and checked after, here on the event loop (as forward messages are): the
        check runs while a disk thread writes and flushes the bytes, so on one connection it
        adds nothing to the wait for the acknowledgement, and needs no thread of its own. If
        it raises, nothing is appended and the future raises its error.
        """
        key = content_key(data)
        repeated = self._repeat_of(key, data)
        if repeated is not None:
            return repeated
        checking: concurrent.futures.Future[Chunk] = concurrent.futures.Future()
        appended = self._queue(data, key, check=checking)
        try:
            checking.set_result(check(data))
        except Exception as refusal:  # answered by the commit, which never indexes the chunk
            checking.set_exception(refusal)
        except BaseException:
            checking.set_exception(StreamUnavailable("shutting down", retry_after=10))
            raise
        return appended

    def _repeat_of(self, key: bytes, data: bytes) -> asyncio.Future[bool] | None:
        """For a retry of a committed or in-flight chunk, the future of its answer.

        A content key is only a hash: a match counts once the bytes are compared, so two
        different chunks can never be taken for one another.
        """
        if key == NO_KEY:
            return None
        by_content = key.startswith(_CONTENT_KEY_TAG)
        committed = self._dedup.get(key)
        if committed is not None and (not by_content or self._holds(committed[1], data)):
            done = asyncio.get_running_loop().create_future()
            done.set_result(False)
            return done
        pending = self._in_flight.get(key)
        if pending is not None and (not by_content or pending.data == data):
            return _duplicate_of(pending.future)
        return None

    def _holds(self, number: int, data: bytes) -> bool:
        """Whether committed chunk ``number`` is exactly ``data``."""
        begin, end = self.reader.chunk_span(number)
        return end - begin == len(data) and self.reader.read(begin, len(data)) == data

    def _queue(
        self,
        data: bytes,
        key: bytes,
        chunk: Chunk | None = None,
        check: concurrent.futures.Future[Chunk] | None = None,
    ) -> asyncio.Future[bool]:
        """Queue a chunk that is not a retry (the callers ask ``_repeat_of`` first)."""
        if self.kind != ENTRIES:
            raise StreamKindError(f"stream {self.name} holds raw bytes, not entries")
        if self.closing:
            raise StreamUnavailable("shutting down", retry_after=10)
        if self._pending_bytes + len(data) > self._max_pending_bytes and self._pending:
            raise StreamUnavailable("overloaded: too many bytes waiting for the disk", 2)
        loop = asyncio.get_running_loop()
        item = _Pending(data, key, loop.create_future(), chunk, check)
        self._pending.append(item)
        self._pending_bytes += len(data)
        if key != NO_KEY:
            self._in_flight[key] = item
        if self._committer is None:
            self._committer = loop.create_task(self._commit_pending(self._start_commit()))
        return item.future

    def _start_commit(self) -> _Commit:
        """Hand the queued chunks to a disk thread now.

        Not from a task, which would only start at the next turn of the event loop: the disk
        starts on them while this turn goes on (checking their entries, reading the next
        body). On one connection, that saves a turn of the loop and a thread wake-up on the
        way to each acknowledgement (0.5 ms per 1 MiB chunk here).
        """
        batch, self._pending = self._pending, []
        self._pending_bytes -= sum(len(item.data) for item in batch)
        writing = self._executor.submit(self._write_batch, batch)
        return _Commit(batch, asyncio.wrap_future(writing))

    async def _commit_pending(self, commit: _Commit | None) -> None:
        """Settle ``commit``, then commit what queued meanwhile, until nothing is queued."""
        try:
            while commit is not None:
                try:
                    kept, records = await commit.writing
                except Exception as error:
                    self._fail(commit.batch, error)
                else:
                    self._settle(commit.batch, kept, records)
                commit = self._start_commit() if self._pending else None
        finally:
            self._committer = None

    def _settle(
        self,
        batch: list[_Pending],
        kept: list[_Pending],
        records: list[_Record],
    ) -> None:
        """Make a written commit visible, and answer its chunks: appended, or refused."""
        for item in batch:
            if item.refusal is not None:
                if self._in_flight.get(item.key) is item:
                    del self._in_flight[item.key]
                if not item.future.done():
                    item.future.set_exception(item.refusal)
        for item, record in zip(kept, records, strict=True):
            self._committed.add(*record)
            if item.key != NO_KEY:
                self._dedup[item.key] = (record[4], len(self._committed.ends) - 1)
                if self._in_flight.get(item.key) is item:
                    del self._in_flight[item.key]
            if not item.future.done():
                item.future.set_result(True)

    def _fail(self, batch: list[_Pending], error: Exception) -> None:
        if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
            log.error("stream %s: commit failed, answering 503: %s", self.name, error)
            reason = StreamUnavailable(f"storage unavailable: {os.strerror(error.errno)}", 10)
        else:
            log.exception("stream %s: commit failed", self.name, exc_info=error)
            reason = StreamUnavailable(f"storage error: {error}", 10)
        for item in batch:
            if self._in_flight.get(item.key) is item:
                del self._in_flight[item.key]
            if not item.future.done():
                item.future.set_exception(reason)

    def _write_batch(
        self, batch: list[_Pending], raw_length: int = 0
    ) -> tuple[list[_Pending], list[_Record]]:
        """Write, fsync, index, fsync. Runs in a worker thread; rolls back on any failure.

        Chunks still under check are written and flushed while the check runs, and indexed
        only if it passes. ``raw_length`` is for a raw upload whose bytes are already
        written past the end.
        """
        start = self.stats.size + raw_length
        with self._files.use() as (data_fd, index_fd):
            self._flush_data(data_fd, [item.data for item in batch], start)
            kept = [item for item in batch if _passes_check(item)]
            if len(kept) < len(batch):
                # A refused chunk lies among the flushed bytes: write the others again without.
                self._flush_data(data_fd, [item.data for item in kept], start, cut=True)
            return kept, (self._write_index(data_fd, index_fd, kept, start) if kept else [])

    def _flush_data(
        self, data_fd: int, pieces: list[bytes], offset: int, cut: bool = False
    ) -> None:
        """Write ``pieces`` at ``offset`` and fsync the data file (``cut``: end it there).

        Bytes past the committed end are invisible until indexed; on failure they are cut
        off again. Runs in a worker thread.
        """
        try:
            data = b"".join(pieces)  # in the thread: a batch's copy stays off the event loop
            if cut:
                os.ftruncate(data_fd, offset + len(data))
            _pwrite_all(data_fd, data, offset)
            os.fdatasync(data_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(data_fd, self.stats.size)
            raise

    def _write_index(
        self, data_fd: int, index_fd: int, items: list[_Pending], start: int
    ) -> list[_Record]:
        """Index ``items``, whose bytes are durable from ``start`` on: the commit point."""
        index_start = self._index_size
        now = time.time()
        records = []
        end = start
        total = self.stats.entries
        for item in items:
            assert item.chunk is not None  # checked before indexing
            end += len(item.data)
            total += item.chunk.count
            records.append((end, total, item.chunk.min_time, item.chunk.max_time, now))
        index = b"".join(
            _pack_record(*record, item.key) for item, record in zip(items, records, strict=True)
        )
        try:
            _pwrite_all(index_fd, index, index_start)
            os.fdatasync(index_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(index_fd, index_start)
                os.ftruncate(data_fd, self.stats.size)
            raise
        self._index_size = index_start + len(index)
        return records

    async def append_raw(self, pieces: AsyncIterator[bytes]) -> int:
        """Append bytes as one chunk (a raw upload), streamed to disk piece by piece.

        Nothing is visible until the whole upload is fsynced and indexed; a failed or
        interrupted upload is cut off again.
        """
        if self.kind != RAW:
            raise StreamKindError(f"stream {self.name} holds entries; upload raw bytes elsewhere")
        if self.closing:
            raise StreamUnavailable("shutting down", retry_after=10)
        loop = asyncio.get_running_loop()
        async with self._write_lock:
            with self._files.use() as (data_fd, _):
                return await self._append_raw(loop, data_fd, pieces)

    async def _append_raw(
        self, loop: asyncio.AbstractEventLoop, data_fd: int, pieces: AsyncIterator[bytes]
    ) -> int:
        start = self.stats.size
        offset = start
        try:
            async for piece in pieces:
                await loop.run_in_executor(self._executor, _pwrite_all, data_fd, piece, offset)
                offset += len(piece)
            empty = Chunk(b"", 0, math.nan, math.nan)
            marker = _Pending(b"", NO_KEY, loop.create_future(), chunk=empty)
            _, records = await loop.run_in_executor(
                self._executor, self._write_batch, [marker], offset - start
            )
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.ftruncate(data_fd, start)
            if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
                reason = f"storage unavailable: {os.strerror(error.errno)}"
                raise StreamUnavailable(reason, 10) from error
            raise
        self._committed.add(*records[0])
        return offset - start

    async def drain(self) -> None:
        """Wait until every queued append is committed or failed."""
        while self._committer is not None:
            await asyncio.shield(self._committer)

    def prune_dedup(self) -> None:
        """Forget keys past the retention window, oldest first, and beyond MAX_DEDUP_KEYS.

        The table is in commit order (dicts keep insertion order), so the stale keys are a
        prefix and pruning stops at the first fresh one.
        """
        horizon = time.time() - self._dedup_retention
        excess = len(self._dedup) - MAX_DEDUP_KEYS
        stale = []
        for key, (committed, _) in self._dedup.items():
            if committed >= horizon and len(stale) >= excess:
                break
            stale.append(key)
        for key in stale:
            del self._dedup[key]


def _passes_check(item: _Pending) -> bool:
    """Wait for ``item``'s check (in the disk thread): True if it may be indexed."""
    if item.chunk is None:
        assert item.check is not None
        try:
            item.chunk = item.check.result()
        except Exception as error:  # the sender's ChunkError, answered from the event loop
            item.refusal = error
    return item.chunk is not None


def _duplicate_of(original: asyncio.Future[bool]) -> asyncio.Future[bool]:
    """A future that reports "duplicate" once the original commit is durable."""
    loop = asyncio.get_running_loop()
    duplicate: asyncio.Future[bool] = loop.create_future()

    def settle(done: asyncio.Future[bool]) -> None:
        if duplicate.done():
            return
        if done.exception() is not None:
            duplicate.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            duplicate.set_result(False)

    original.add_done_callback(settle)
    return duplicate


def _pack_record(
    end: int, total: int, low: float, high: float, committed: float, key: bytes
) -> bytes:
    head = _RECORD.pack(_MAGIC, end, total, low, high, committed, key, 0)[:_CRC_SPAN]
    return head + struct.pack("<I", zlib.crc32(head))


class StoreWriter(ABC):
    """The streams, as the router writes them: the only way to a stream's write methods."""

    @abstractmethod
    def writer(self, name: str) -> StreamWriter | None:
        """The writer of the stream named ``name``, if there is one."""

    @abstractmethod
    def open_or_create(self, name: str, policy: str, kind: str = ENTRIES) -> StreamWriter:
        """The writer of stream ``name``, created for ``policy`` with ``kind`` if new."""

    @abstractmethod
    def start_closing(self) -> None:
        """Refuse new appends (StreamUnavailable); queued ones still commit."""

    @abstractmethod
    def count_of(self, policy: str) -> int:
        """How many streams ``policy`` owns (for its limit on new streams)."""


class StreamStore(StoreReader, StoreWriter):
    """All streams under ``root/streams``, one directory each; opening a stream recovers it
    after a crash. Readers get its ``StoreReader`` side, the router its ``StoreWriter`` side."""

    def __init__(
        self,
        root: str,
        dedup_retention: float = 7 * 24 * 3600,
        max_pending_bytes: int = 256 << 20,
        max_open_streams: int = 256,
    ) -> None:
        self.directory = os.path.join(root, "streams")
        self.files = FileCache(max_open_streams)
        os.makedirs(self.directory, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stream-commit")
        self._dedup_retention = dedup_retention
        self._max_pending_bytes = max_pending_bytes
        self._streams: dict[str, StreamWriter] = {}
        for name in sorted(os.listdir(self.directory)):
            if os.path.exists(os.path.join(self.directory, name, "meta.json")):
                self._streams[name] = self._open(name)

    def _open(self, name: str) -> StreamWriter:
        return StreamWriter(
            os.path.join(self.directory, name),
            self._executor,
            self._dedup_retention,
            self._max_pending_bytes,
            self.files,
        )

    # -- StoreReader ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[StreamReader]:
        writers = sorted(self._streams.values(), key=lambda stream: stream.name)
        return iter([stream.reader for stream in writers])

    def get(self, name: str) -> StreamReader | None:
        stream = self._streams.get(name)
        return None if stream is None else stream.reader

    # -- StoreWriter ----------------------------------------------------------------------------

    def writer(self, name: str) -> StreamWriter | None:
        return self._streams.get(name)

    def open_or_create(self, name: str, policy: str, kind: str = ENTRIES) -> StreamWriter:
        stream = self._streams.get(name)
        if stream is not None:
            return stream
        check_stream_name(name)
        try:
            return self._create(name, policy, kind)
        except OSError as error:
            if error.errno in _TRANSIENT_ERRNOS:
                reason = f"cannot create stream {name}: {os.strerror(error.errno)}"
                raise StreamUnavailable(reason, 10) from error
            raise

    def _create(self, name: str, policy: str, kind: str) -> StreamWriter:
        path = os.path.join(self.directory, name)
        os.makedirs(path, exist_ok=True)
        meta_path = os.path.join(path, "meta.json")
        temporary = meta_path + ".tmp"
        with open(temporary, "w") as meta_file:
            json.dump({"kind": kind, "policy": policy, "created": time.time()}, meta_file)
            meta_file.flush()
            os.fsync(meta_file.fileno())
        os.replace(temporary, meta_path)
        fsync_directory(path)
        fsync_directory(self.directory)
        stream = self._streams[name] = self._open(name)
        return stream

    def start_closing(self) -> None:
        for stream in self._streams.values():
            stream.closing = True

    def count_of(self, policy: str) -> int:
        return sum(1 for stream in self._streams.values() if stream.policy == policy)

    # -- the service's own ----------------------------------------------------------------------

    def prune_dedup(self) -> None:
        """Forget expired dedup keys of every stream (see StreamWriter.prune_dedup)."""
        for stream in self._streams.values():
            stream.prune_dedup()
        self.files.close_idle(IDLE_FILES_SECONDS)

    async def close(self) -> None:
        self.start_closing()
        for stream in list(self._streams.values()):
            await stream.drain()
            stream.close()
        self._executor.shutdown(wait=True)
