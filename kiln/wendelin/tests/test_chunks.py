"""Chunk validation: what is accepted is stored byte for byte; what is not names the problem."""

import random
import re
import struct

import msgpack
import pytest

from kiln.wendelin import chunks, eventtime

pytestmark = pytest.mark.unit


def entry(seconds: int, record: dict, nanos: int = 0) -> bytes:
    time = msgpack.ExtType(0, struct.pack(">II", seconds, nanos))
    return msgpack.packb([time, record], use_bin_type=True)


def test_event_time_and_integer_entries_are_kept_byte_for_byte() -> None:
    blob = entry(1_700_000_000, {"temp": 21.5}, 250_000_000) + msgpack.packb([1_700_000_001, {}])
    chunk = chunks.parse_entries(blob)
    assert chunk.data == blob
    assert chunk.count == 2
    assert chunk.min_time == pytest.approx(1_700_000_000.25)
    assert chunk.max_time == 1_700_000_001


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (entry(1, {"a": 1})[:-1], "truncated body: entry 0"),
        (entry(1, {"a": 1}) + entry(2, {"b": 2})[:5], "truncated body: entry 1"),
        (msgpack.packb([msgpack.ExtType(5, b"12345678"), {}]), "unsupported msgpack ext type 5"),
        (msgpack.packb([msgpack.ExtType(0, b"1234"), {}]), "EventTime must hold 8 bytes"),
        (msgpack.packb([1, "not a map"]), "record must be a map"),
        (msgpack.packb([1, {}, 3]), "not a [time, record] array"),
        (msgpack.packb(["yesterday", {}]), "time must be an EventTime"),
        (b"\xc1", "malformed msgpack"),
        (b"", "empty chunk"),
    ],
)
def test_bad_chunks_are_refused_with_a_reason(blob: bytes, message: str) -> None:
    with pytest.raises(chunks.ChunkError, match=re.escape(message)):
        chunks.parse_entries(blob)


def test_packed_entries_keep_str_and_bin_apart() -> None:
    chunk = chunks.pack_entries([[eventtime.pack(10.5), {"text": "é", "blob": b"\xff\x00"}]])
    time, record = msgpack.unpackb(chunk.data, raw=False)
    assert record == {"text": "é", "blob": b"\xff\x00"}
    assert eventtime.to_seconds(time) == 10.5


def test_event_time_round_trip() -> None:
    assert eventtime.to_seconds(eventtime.pack(1_700_000_000.123456789)) == pytest.approx(
        1_700_000_000.123456789, abs=1e-6
    )


# --- The C fast path agrees with the Python parser ----------------------------------------


def random_value(rng: random.Random, depth: int = 0) -> object:
    """Any msgpack value, nested, with every length class (fix, 8, 16 and 32 bits)."""
    kinds = ["int", "neg", "big", "float", "str", "bin", "ext", "nil", "bool"]
    if depth < 3:
        kinds += ["list", "map"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, 127, 128, 255, 65535, 65536, 2**32, 2**64 - 1])
    if kind == "neg":
        return rng.choice([-1, -32, -33, -129, -32769, -(2**31) - 1, -(2**63)])
    if kind == "big":
        return rng.randrange(2**63)
    if kind == "float":
        return rng.random()
    if kind == "str":
        return "é" * rng.choice([0, 5, 40, 300, 70000])
    if kind == "bin":
        return bytes(rng.choice([0, 3, 300, 70000]))
    if kind == "ext":
        return msgpack.ExtType(rng.randrange(1, 127), bytes(rng.choice([1, 2, 4, 8, 16, 3, 300])))
    if kind == "nil":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    size = rng.choice([0, 1, 3, 16, 20])
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(size)]
    return {f"k{n}": random_value(rng, depth + 1) for n in range(size)}


def random_chunk(rng: random.Random) -> bytes:
    return b"".join(
        entry(rng.randrange(2**32), {"v": random_value(rng)}, rng.randrange(10**9))
        for _ in range(rng.randrange(1, 6))
    )


def python_verdict(blob: bytes) -> tuple[int, float, float] | None:
    try:
        chunk = chunks._parse_generally(blob)
    except chunks.ChunkError:
        return None
    return chunk.count, chunk.min_time, chunk.max_time


def test_fast_path_matches_the_python_parser_on_random_chunks() -> None:
    rng = random.Random(20261122)
    for _ in range(300):
        blob = random_chunk(rng)
        fast = chunks._scan_event_time_entries(blob)
        assert fast is not None
        assert (fast.count, fast.min_time, fast.max_time) == python_verdict(blob)


def test_fast_path_never_accepts_what_the_python_parser_refuses() -> None:
    """Flipped, cut and inserted bytes: a bounded, seeded fuzz of the C scanner."""
    rng = random.Random(7)
    for _ in range(6000):
        blob = bytearray(random_chunk(rng))
        for _ in range(rng.randrange(1, 4)):
            where = rng.randrange(len(blob))
            action = rng.randrange(3)
            if action == 0:
                blob[where] = rng.randrange(256)
            elif action == 1:
                del blob[where:]
                if not blob:
                    blob = bytearray(b"\x92")
            else:
                blob[where:where] = bytes([rng.randrange(256)])
        data = bytes(blob)
        fast = chunks._scan_event_time_entries(data)
        if fast is not None:
            assert (fast.count, fast.min_time, fast.max_time) == python_verdict(data)


@pytest.mark.parametrize(
    "record_bytes",
    [
        b"\x81\xa1k\xdd\xff\xff\xff\xff",  # an array32 claiming 4 billion items
        b"\x81\xa1k\xdf\xff\xff\xff\xff\x00",  # a map32 claiming 4 billion pairs
        b"\x81\xa1k\xdb\xff\xff\xff\xf0abc",  # a str32 longer than the chunk
        b"\x81\xa1k\xc9\x7f\xff\xff\xff\x01",  # an ext32 longer than the chunk
        b"\x81\xa1k\xc1",  # 0xc1, never used by msgpack
        b"\x81\x80\x01",  # a map as a map key: Python cannot read it back
        b"\x81\xa1k\xd4\xff\x00",  # a negative ext type: Python reads only 0..127
        b"\x81\xa1k" + b"\x91" * 100_000 + b"\x00",  # deep nesting: no recursion to overflow
    ],
    ids=["array32", "map32", "str32", "ext32", "c1", "map-key", "negative-ext", "deep"],
)
def test_hostile_records_are_refused_without_crashing(record_bytes: bytes) -> None:
    head = b"\x92\xd7\x00" + struct.pack(">II", 1_700_000_000, 0)
    blob = head + record_bytes
    fast = chunks._scan_event_time_entries(blob)
    verdict = python_verdict(blob)
    if verdict is None:
        assert fast is None
        with pytest.raises(chunks.ChunkError):
            chunks.parse_entries(blob)
    else:
        assert fast is not None and (fast.count, fast.min_time, fast.max_time) == verdict
