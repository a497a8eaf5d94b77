"""Event times from records, by fluentd in_http's rules (record_time.py)."""

import math

import msgpack
import pytest

from kiln.wendelin import eventtime
from kiln.wendelin.record_time import TimeKey, stamp_records

pytestmark = pytest.mark.unit

ARRIVAL = 1_800_000_000.0


def seconds(entries: list[list[object]]) -> list[float]:
    return [eventtime.to_seconds(stamp) for stamp, _ in entries]


def test_the_time_key_is_the_event_time_and_is_removed() -> None:
    records = [{"time": 1_700_000_000, "v": 1}, {"time": 1_700_000_000.25, "v": 2}, {"v": 3}]
    entries = stamp_records(records, ARRIVAL, TimeKey())
    assert seconds(entries) == [1_700_000_000, 1_700_000_000.25, ARRIVAL]
    assert [record for _, record in entries] == [{"v": 1}, {"v": 2}, {"v": 3}]


def test_other_accepted_forms() -> None:
    event_time = eventtime.pack(1_700_000_000.5)
    records = [{"time": "1700000000.75"}, {"time": event_time}, {"time": None}, {"time": "1e9"}]
    assert seconds(stamp_records(records, ARRIVAL, TimeKey())) == [
        1_700_000_000.75,
        1_700_000_000.5,
        ARRIVAL,  # null, as in fluentd: no time of its own
        1e9,
    ]


def test_a_query_time_wins_and_leaves_the_records_alone_as_fluentd_does() -> None:
    records = [{"time": 5, "v": 1}, {"v": 2}]
    entries = stamp_records(records, ARRIVAL, TimeKey(), query_time="1700000000.5")
    assert seconds(entries) == [1_700_000_000.5] * 2
    assert [record for _, record in entries] == [{"time": 5, "v": 1}, {"v": 2}]
    assert seconds(stamp_records([{}], ARRIVAL, TimeKey(), query_time="0")) == [ARRIVAL]


def test_another_key_kept_or_none() -> None:
    record = {"ts": 1_700_000_000, "time": 7}
    entries = stamp_records([record], ARRIVAL, TimeKey("ts", keep=True))
    assert seconds(entries) == [1_700_000_000] and entries[0][1] == record
    entries = stamp_records([{"time": 7}], ARRIVAL, TimeKey(None))
    assert seconds(entries) == [ARRIVAL] and entries[0][1] == {"time": 7}


@pytest.mark.parametrize(
    "value, says",
    [
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-1, "-1"),
        (2**40, str(2**40)),
        ("soon", "non-numeric string"),
        ("nan", "non-numeric string"),
        ("-5", "non-numeric string"),
        (True, "boolean"),
        ({"seconds": 1}, "map"),
        ([1], "array"),
        (msgpack.ExtType(1, b"12345678"), "ext type 1"),
    ],
)
def test_bad_times_name_the_record_and_the_value(value: object, says: str) -> None:
    records = [{"time": 1}, {"time": value}]
    with pytest.raises(ValueError) as refused:
        stamp_records(records, ARRIVAL, TimeKey())
    message = str(refused.value)
    assert message.startswith("record 1 (counting from 0): 'time'") and says in message


@pytest.mark.parametrize("text", ["soon", "-1", "nan", "inf", "1e999", ""])
def test_bad_query_times(text: str) -> None:
    with pytest.raises(ValueError, match=r"\?time="):
        stamp_records([{}], ARRIVAL, TimeKey(), query_time=text)
