"""The read side of data streams: committed bytes by range, entries by index or time, stats.

A ``StreamReader`` has no method that writes: the stream API, the web pages and the catalog
sync get readers only (``StoreReader``), and only the router holds the write side
(``streams.StoreWriter``). A reader sees committed chunks only: its stream's writer adds each
one to the reader's ``CommittedChunks`` once the chunk's index record is fsynced, so bytes of a
commit still on its way to disk are never served.
"""

import bisect
import math
import os
import struct
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import msgpack

from kiln.wendelin.refusals import Conflict

ENTRIES = "entries"
RAW = "raw"
# Chunks one entry scan looks at before answering with a cursor (bounded work per request).
MAX_CHUNKS_PER_SCAN = 200_000
# A stream's (data, index) file descriptors, open while the context lasts (streams.StreamFiles).
OpenFiles = Callable[[], AbstractContextManager[tuple[int, int]]]


class StreamKindError(Conflict):
    """The operation does not fit the stream's kind (entries into a raw stream or back)."""


@dataclass(slots=True)
class StreamStats:
    size: int = 0
    entries: int = 0
    chunks: int = 0
    commits: int = 0  # fsyncs that committed them: chunks / commits is the group-commit batch
    first_time: float = math.nan
    last_time: float = math.nan
    last_ingest: float = math.nan


@dataclass(slots=True)
class CommittedChunks:
    """Per committed chunk, what range, entry and time lookups need; grown by the writer only."""

    ends: array = field(default_factory=lambda: array("q"))
    entry_totals: array = field(default_factory=lambda: array("q"))
    min_times: array = field(default_factory=lambda: array("d"))
    max_times: array = field(default_factory=lambda: array("d"))
    # Running maximum of max_times: sorted, so a time query bisects past old chunks.
    max_time_prefix: array = field(default_factory=lambda: array("d"))
    stats: StreamStats = field(default_factory=StreamStats)

    def add(self, end: int, total: int, low: float, high: float, committed: float) -> None:
        """One more committed chunk: its end offset, entries in total, times and commit time."""
        self.ends.append(end)
        self.entry_totals.append(total)
        self.min_times.append(low)
        self.max_times.append(high)
        previous = self.max_time_prefix[-1] if self.max_time_prefix else -math.inf
        self.max_time_prefix.append(previous if math.isnan(high) else max(previous, high))
        stats = self.stats
        stats.size = end
        stats.entries = total
        stats.chunks += 1
        if committed != stats.last_ingest:  # the chunks of one commit share its time
            stats.commits += 1
        stats.last_ingest = committed
        if not math.isnan(low):
            stats.first_time = low if math.isnan(stats.first_time) else min(stats.first_time, low)
            stats.last_time = high if math.isnan(stats.last_time) else max(stats.last_time, high)


class StreamReader:
    """The committed part of one stream, read-only."""

    def __init__(
        self, name: str, kind: str, policy: str, files: OpenFiles, committed: CommittedChunks
    ) -> None:
        self.name = name
        self.kind = kind
        self.policy = policy
        # The writer's (data, index) descriptors, opened on use: pread only here.
        self._files = files
        # The writer grows these in place (CommittedChunks.add); they are never replaced.
        self.stats = committed.stats
        self._ends = committed.ends
        self._entry_totals = committed.entry_totals
        self._min_times = committed.min_times
        self._max_times = committed.max_times
        self._max_time_prefix = committed.max_time_prefix

    def read(self, offset: int, length: int) -> bytes:
        """Committed bytes only: a concurrent commit's tail is never visible."""
        end = min(offset + length, self.stats.size)
        if offset >= end:
            return b""
        with self._files() as (data_fd, _):
            return os.pread(data_fd, end - offset, offset)

    def iter_bytes(self, start: int, end: int, piece: int = 1 << 20) -> Iterator[bytes]:
        end = min(end, self.stats.size)
        while start < end:
            data = self.read(start, min(piece, end - start))
            if not data:
                return
            start += len(data)
            yield data

    def chunk_span(self, number: int) -> tuple[int, int]:
        return (self._ends[number - 1] if number else 0), self._ends[number]

    def chunk_of_entry(self, entry: int) -> int:
        """Number of the chunk holding entry ``entry`` (0-based, across the stream)."""
        return bisect.bisect_right(self._entry_totals, entry)

    def scan_entries(
        self,
        start: int = 0,
        stop: int | None = None,
        since: float = -math.inf,
        until: float = math.inf,
        limit: int = 10_000,
        max_scan_bytes: int = 16 << 20,
    ) -> tuple[bytes, int | None]:
        """Stored bytes of the entries with index in [start, stop) and time in [since, until).

        Returns the entries (at most ``limit``) and the index to continue from, or None when
        the range is exhausted. Work per call is bounded by ``max_scan_bytes``, so a
        time query over a long stream answers in pages instead of reading it whole.
        """
        if self.kind != ENTRIES:
            raise StreamKindError(f"stream {self.name} holds raw bytes, not entries")
        total = self.stats.entries
        stop = total if stop is None else min(stop, total)
        chunk_count = len(self._ends)
        number = self.chunk_of_entry(start)
        # Every chunk before the running maximum reaches `since` is too old: skip them at once.
        number = max(number, bisect.bisect_left(self._max_time_prefix, since))
        index = max(start, self._entry_totals[number - 1] if number else 0)
        found: list[bytes] = []
        scanned = 0
        examined = 0
        while number < chunk_count and index < stop:
            first_entry = self._entry_totals[number - 1] if number else 0
            examined += 1
            if self._max_times[number] < since or self._min_times[number] >= until:
                number += 1
                index = max(index, self._entry_totals[number - 1])
                if examined >= MAX_CHUNKS_PER_SCAN and number < chunk_count and index < stop:
                    return b"".join(found), index
                continue
            begin, end = self.chunk_span(number)
            data = self.read(begin, end - begin)
            scanned += len(data)
            unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=len(data))
            unpacker.feed(data)
            position = 0
            for offset, entry in enumerate(unpacker, start=first_entry):
                next_position = unpacker.tell()
                if offset >= index and offset < stop:
                    seconds = _seconds(entry[0])
                    if since <= seconds < until:
                        found.append(data[position:next_position])
                        if len(found) >= limit:
                            return b"".join(found), offset + 1 if offset + 1 < stop else None
                position = next_position
            number += 1
            index = max(index, self._entry_totals[number - 1])
            if scanned >= max_scan_bytes and number < chunk_count and index < stop:
                return b"".join(found), index
        return b"".join(found), None


def _seconds(value: object) -> float:
    if type(value) is msgpack.ExtType:
        seconds, nanos = struct.unpack(">II", value.data)  # type: ignore[attr-defined]
        return seconds + nanos * 1e-9
    return float(value)  # type: ignore[arg-type]


class StoreReader(ABC):
    """The streams, as readers see them: listing and lookup by name."""

    @abstractmethod
    def get(self, name: str) -> StreamReader | None:
        """The stream named ``name``, if there is one."""

    @abstractmethod
    def __iter__(self) -> Iterator[StreamReader]:
        """Every stream, by name."""
