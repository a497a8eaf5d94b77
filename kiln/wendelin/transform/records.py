"""Record streams (msgpack ``[time, record]`` entries) into rows of numeric columns.

One 2-D float64 array per stream: column 0 is the entry time (seconds since the epoch), the
others the record's numeric fields, named in the array's ``columns`` attribute. A record
without a field has NaN there. One array rather than one per field: one append commits all
fields of an entry range with one cursor, so the columns can never disagree on how far they
got, and a plot shows every field against the time column from one array.
"""

import numbers

import msgpack
import numpy as np

from kiln.wendelin import chunks, eventtime


class RecordError(ValueError):
    """Entries that cannot become rows; the message names the entry."""


def parse(data: bytes) -> tuple[list[list], int]:
    """The whole entries at the start of ``data`` and how many bytes they take.

    A read can end inside an entry (it is cut at a byte count); that entry is left for the
    next read, which starts where the whole ones end.
    """
    unpacker = chunks.iter_entries(data)
    entries: list[list] = []
    used = 0
    try:
        for entry in unpacker:
            entries.append(entry)
            used = unpacker.tell()
    except msgpack.OutOfData:
        pass
    return entries, used


def is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def numeric_fields(entries: list[list]) -> list[str]:
    """Top-level numeric fields of ``entries``, in the order they first appear."""
    seen: dict[str, None] = {}
    for _, record in entries:
        if isinstance(record, dict):
            for key, value in record.items():
                if isinstance(key, str) and is_number(value):
                    seen.setdefault(key, None)
    return list(seen)


def rows(entries: list[list], fields: list[str], first_index: int) -> np.ndarray:
    """One row per entry: its time, then each field (NaN when absent).

    A field present with a value that is not a number (a string, a map) is a RecordError:
    the declared columns say it is numeric, and a silent NaN would hide a sender's bug.
    ``first_index`` numbers the entries in messages.
    """
    table = np.full((len(entries), len(fields) + 1), np.nan, dtype=np.float64)
    for number, (when, record) in enumerate(entries):
        table[number, 0] = eventtime.to_seconds(when)
        if not isinstance(record, dict):
            continue
        for column, field in enumerate(fields, start=1):
            value = record.get(field)
            if value is None:
                continue
            if not is_number(value):
                raise RecordError(
                    f"entry {first_index + number}: field {field!r} is {value!r}, not a number"
                )
            table[number, column] = float(value)
    return table
