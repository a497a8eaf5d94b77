"""Chunk validation: what is accepted is stored byte for byte; what is not names the problem."""

import re
import struct

import msgpack
import pytest

from wendelin import chunks, eventtime

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
