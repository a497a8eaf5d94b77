"""Event times taken from the records themselves, as fluentd's in_http does.

fluentd 1.16.11's in_http with its default parser (``lib/fluent/plugin/in_http.rb``,
``on_request`` and ``convert_time_field``) decides a record's event time so:

1. ``?time=`` in the query, if given, is the time of every record of the request (``0``, or
   text that is not a number, means the arrival time), and the records are left untouched:
   a ``time`` key they carry stays in them as data;
2. otherwise the record's ``time_key`` (default ``time``) is removed from it (kept with
   ``keep_time_key true``) and its value is the event time, through Ruby's ``Time.at``: an
   integer or a float of seconds since the epoch (or a msgpack EventTime); a missing key or
   ``null`` means the arrival time; anything else fails the whole request with a 400.

kiln does the same, with these differences, each refusing what would otherwise be stored
wrong: a ``?time=`` that is not a number is a 400 (fluentd silently takes the arrival time);
a record time may also be a decimal number written as a string (``"1700000000.25"``); a
negative, infinite or NaN time, one past 2106 (EventTime holds unsigned 32-bit seconds), a
boolean, a string that is not a number, a map or an array is refused with a 400 naming the
record and the value, and nothing of the request is stored.
"""

import re
import reprlib
from dataclasses import dataclass

import msgpack

from kiln.wendelin import eventtime

# A decimal number as text; float() alone would also take "nan", "inf", "1_0" and spaces.
_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


@dataclass(frozen=True, slots=True)
class TimeKey:
    """fluentd's ``time_key`` and ``keep_time_key`` (in_http's defaults: ``time``, false)."""

    name: str | None = "time"  # None: records' own times are not read
    keep: bool = False


def stamp_records(
    records: list[object], arrival: float, key: TimeKey, query_time: str | None = None
) -> list[list[object]]:
    """``[EventTime, record]`` entries for ``records``, in order (see the module's rules).

    ``query_time`` is the request's ``?time=`` (None: absent). ValueError names the record
    and the value that cannot be a time. A record whose key is removed is changed in place.
    """
    if query_time is not None:
        stamp = _query_stamp(query_time, arrival)
        return [[stamp, record] for record in records]
    now = eventtime.pack(arrival)
    entries: list[list[object]] = []
    for index, record in enumerate(records):
        # A record that is not a map is refused later, by chunks.check_entry, by its index.
        if key.name is None or type(record) is not dict or key.name not in record:
            entries.append([now, record])
            continue
        value = record[key.name] if key.keep else record.pop(key.name)
        entries.append([now if value is None else _stamp_of(value, index, key.name), record])
    return entries


def _query_stamp(text: str, arrival: float) -> msgpack.ExtType:
    if not _NUMBER.fullmatch(text):
        raise ValueError(
            f"?time={_SHORT.repr(text)}: time must be a decimal number of seconds since 1970"
        )
    try:
        return eventtime.pack(float(text) or arrival)  # fluentd: 0 is the arrival time
    except ValueError as error:
        raise ValueError(f"?time={_SHORT.repr(text)} cannot be an event time ({error})") from None


def _stamp_of(value: object, index: int, name: str) -> object:
    kind = type(value)
    try:
        if kind is int or kind is float:
            return eventtime.pack(value)  # type: ignore[arg-type]
        if kind is msgpack.ExtType:
            return eventtime.check(value)  # type: ignore[arg-type]
        if kind is str and _NUMBER.fullmatch(value):  # type: ignore[arg-type]
            return eventtime.pack(float(value))  # type: ignore[arg-type]
        problem = f"is a {_kind_name(value)}, not seconds since 1970"
    except ValueError as error:
        problem = f"cannot be an event time ({error})"
    raise ValueError(
        f"record {index} (counting from 0): {name!r} {_SHORT.repr(value)} {problem}; send "
        "seconds since 1970 as an integer, a float or a decimal string, or leave the key out "
        "to stamp the arrival time"
    )


def _kind_name(value: object) -> str:
    names = {dict: "map", list: "array", bool: "boolean", str: "non-numeric string"}
    return names.get(type(value), type(value).__name__)
