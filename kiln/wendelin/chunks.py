"""Validate fluentd chunks: concatenations of msgpack ``[time, record]`` entries.

A chunk is checked whole before anything is appended, so a bad chunk appends nothing.
"""

import math
from dataclasses import dataclass

import msgpack

from kiln.wendelin import _entryscan, eventtime
from kiln.wendelin.refusals import Malformed


class ChunkError(Malformed):
    """Entries that will never be accepted; the message names the problem for the sender."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Validated entries, stored exactly as ``data``."""

    data: bytes
    count: int
    min_time: float
    max_time: float


# Levels of maps and arrays in a record, the record itself counting as one. Readers convert
# records recursively (JSON, the web page): without a bound, one record nested 900 deep was
# accepted and then made every page of its stream fail.
DEFAULT_MAX_DEPTH = 64


def parse_entries(blob: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Chunk:
    """Check that ``blob`` is one or more complete ``[time, record]`` entries.

    Values inside records may be anything msgpack allows (ext types included), nested at most
    ``max_depth`` levels; the entry time must be an EventTime, an integer or a float.
    """
    return _scan_event_time_entries(blob, max_depth) or _parse_generally(blob, max_depth)


def _scan_event_time_entries(blob: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Chunk | None:
    """The fast path, for what fluentd v1 sends: ``fixarray(2) [EventTime, map]`` entries.

    One pass in C (``_entryscan.c``) checks the shape and that every record is well-formed
    msgpack: a Python loop over entries cost more than writing and fsyncing the chunk.
    Anything unusual returns None, and the general parser decides (and names the problem).
    """
    found = _entryscan.scan(blob, max_depth)
    if found is None:
        return None
    count, lowest, highest = found
    return Chunk(blob, count, eventtime.from_key(lowest), eventtime.from_key(highest))


def _parse_generally(blob: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Chunk:
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=max(len(blob), 1))
    unpacker.feed(blob)
    count = 0
    end = 0
    lowest = math.inf
    highest = -math.inf
    try:
        for entry in unpacker:
            seconds = check_entry(entry, count, max_depth)
            lowest = min(lowest, seconds)
            highest = max(highest, seconds)
            count += 1
            end = unpacker.tell()
    except ChunkError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise ChunkError(f"malformed msgpack in entry {count}: {error}") from None
    if end != len(blob):
        raise ChunkError(
            f"truncated body: entry {count} starting at byte {end} of {len(blob)} is incomplete"
        )
    if count == 0:
        raise ChunkError("empty chunk: no [time, record] entries")
    return Chunk(blob, count, lowest, highest)


def check_entry(entry: object, index: int, max_depth: int = DEFAULT_MAX_DEPTH) -> float:
    """Seconds of one ``[time, record]`` entry; ChunkError naming the entry if it is wrong."""
    if type(entry) is not list or len(entry) != 2:  # type: ignore[arg-type]
        raise ChunkError(f"entry {index} is not a [time, record] array")
    time, record = entry  # type: ignore[misc]
    if type(record) is not dict:
        raise ChunkError(f"entry {index}: record must be a map, not {type(record).__name__}")
    if deeper_than(record, max_depth):
        raise ChunkError(
            f"entry {index}: record nested deeper than {max_depth} levels of maps and arrays "
            "(kiln wendelin serve --max-record-depth); flatten it"
        )
    try:
        return eventtime.to_seconds(time)
    except ValueError as error:
        raise ChunkError(f"entry {index}: {error}") from None


def deeper_than(record: object, limit: int) -> bool:
    """Whether maps and arrays nest more than ``limit`` levels in ``record`` (no recursion)."""
    stack: list[tuple[object, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if type(value) is dict:
            children: object = value.values()  # keys are never containers (unhashable)
        elif type(value) is list or type(value) is tuple:
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)  # type: ignore[attr-defined]
    return False


def pack_entries(entries: list[tuple[object, object]], max_depth: int = DEFAULT_MAX_DEPTH) -> Chunk:
    """Validate and pack entries that arrived as objects (forward Message and Forward modes)."""
    packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
    parts = []
    lowest = math.inf
    highest = -math.inf
    for index, entry in enumerate(entries):
        seconds = check_entry(list(entry) if type(entry) is tuple else entry, index, max_depth)
        lowest = min(lowest, seconds)
        highest = max(highest, seconds)
        parts.append(packer.pack(entry))
    if not parts:
        raise ChunkError("empty chunk: no [time, record] entries")
    return Chunk(b"".join(parts), len(parts), lowest, highest)


def iter_entries(data: bytes) -> msgpack.Unpacker:
    """Entries of stored bytes, as ``[time, record]`` with str keys and EventTime kept."""
    unpacker = msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        strict_map_key=False,
        max_buffer_size=max(len(data), 1),
    )
    unpacker.feed(data)
    return unpacker
