"""fluentd's EventTime: msgpack ext type 0, big-endian uint32 seconds then uint32 nanoseconds."""

import math
import struct

import msgpack

EVENT_TIME_EXT_CODE = 0
_SECONDS_NANOS = struct.Struct(">II")


class UnsupportedExtType(ValueError):
    """A msgpack ext type that fluentd never sends; the input is wrong, not transient."""


def check(value: msgpack.ExtType) -> msgpack.ExtType:
    """``value`` if it is a well-formed EventTime; UnsupportedExtType naming the problem."""
    if value.code != EVENT_TIME_EXT_CODE:
        raise UnsupportedExtType(
            f"unsupported msgpack ext type {value.code} as time (only EventTime, type 0)"
        )
    if len(value.data) != _SECONDS_NANOS.size:
        raise UnsupportedExtType(f"EventTime must hold 8 bytes, got {len(value.data)}")
    return value


def from_key(key: bytes) -> float:
    """Seconds of the 8 payload bytes of an EventTime (they sort like the times they hold)."""
    seconds, nanos = _SECONDS_NANOS.unpack(key)
    return seconds + nanos * 1e-9


_LATEST = 2**32 - 1  # EventTime holds unsigned 32-bit seconds


def pack(seconds: float) -> msgpack.ExtType:
    """An EventTime for a time in seconds since the epoch; ValueError if it cannot be one."""
    if type(seconds) not in (int, float):
        raise ValueError(f"time must be a number of seconds, not {type(seconds).__name__}")
    if not (math.isfinite(seconds) and 0 <= seconds < _LATEST):
        raise ValueError(f"time must be seconds since 1970 from 0 to {_LATEST}, not {seconds}")
    whole = int(seconds)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = min(whole + 1, _LATEST), nanos - 1_000_000_000
    return msgpack.ExtType(EVENT_TIME_EXT_CODE, _SECONDS_NANOS.pack(whole, nanos))


def to_seconds(value: object) -> float:
    """Seconds since the epoch of an entry time: EventTime, int or float.

    Raises ValueError for anything else, so a caller can name the bad entry.
    """
    kind = type(value)
    if kind is msgpack.ExtType:
        return from_key(check(value).data)  # type: ignore[arg-type]
    if kind is int or kind is float:
        return float(value)  # type: ignore[arg-type]
    raise ValueError(
        f"time must be an EventTime (ext type 0), an integer or a float, not {kind.__name__}"
    )
