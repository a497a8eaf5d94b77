"""Downsampled series of a record stream (``series.downsample``), on a real stream on disk."""

import asyncio
import math

import msgpack
import pytest

from kiln.wendelin import chunks, eventtime, series
from kiln.wendelin.refusals import Malformed
from kiln.wendelin.streams import StreamStore

pytestmark = pytest.mark.unit
T0 = 1_700_000_000.0


def make_stream(root: str, records: list[tuple[float, object]]):
    """A stream ``s`` holding ``records`` as [EventTime, record] entries, in chunks of 100."""

    async def write() -> None:
        store = StreamStore(root)
        writer = store.open_or_create("s", "p")
        for first in range(0, len(records), 100):
            body = b"".join(
                msgpack.packb([eventtime.pack(seconds), record])
                for seconds, record in records[first : first + 100]
            )
            await writer.append(chunks.parse_entries(body))
        await store.close()

    asyncio.run(write())
    stream = StreamStore(root).get("s")
    assert stream is not None
    return stream


def test_buckets_hold_min_max_mean_per_field_at_their_mean_time(tmp_path) -> None:
    # One hour of minutes: rpm climbs 0..59, temp is present every other minute only.
    records = [
        (T0 + 60 * n, {"rpm": n, "temp": 20.0 + n if n % 2 == 0 else None, "on": True})
        for n in range(60)
    ]
    stream = make_stream(str(tmp_path), records)
    since, until = series.default_window(stream)
    assert since == T0 and T0 + 3540 < until < T0 + 3541
    answer = series.downsample(stream, since, until, buckets=6, max_entries=1000)
    assert answer["complete"] is True and answer["entries"] == 60
    assert answer["count"] == [10] * 6
    assert answer["time"][0] == pytest.approx(T0 + 60 * 4.5)  # mean time of minutes 0..9
    rpm = answer["fields"]["rpm"]
    assert rpm["min"] == [0, 10, 20, 30, 40, 50] and rpm["max"] == [9, 19, 29, 39, 49, 59]
    assert rpm["mean"][0] == pytest.approx(4.5)
    assert answer["fields"]["temp"]["min"][1] == 30.0  # None values and booleans are skipped
    assert set(answer["fields"]) == {"rpm", "temp"}


def test_a_zoomed_window_reads_only_its_entries_and_leaves_empty_buckets_out(tmp_path) -> None:
    stream = make_stream(str(tmp_path), [(T0 + n, {"v": n}) for n in range(1000)])
    answer = series.downsample(stream, T0 + 100, T0 + 110, buckets=1000, max_entries=10_000)
    assert answer["entries"] == 10
    assert answer["fields"]["v"]["min"] == list(range(100, 110))  # 10 of 1000 buckets used
    assert answer["time"] == [T0 + n for n in range(100, 110)]


def test_reading_stops_at_max_entries_and_says_so(tmp_path) -> None:
    stream = make_stream(str(tmp_path), [(T0 + n, {"v": n}) for n in range(500)])
    answer = series.downsample(stream, T0, T0 + 500, buckets=10, max_entries=120)
    assert answer["entries"] == 120 and answer["complete"] is False
    assert answer["fields"]["v"]["max"][-1] == 119


def test_fields_are_capped_and_odd_records_do_not_break_the_series(tmp_path) -> None:
    wide = {f"f{n:02}": n for n in range(series.MAX_FIELDS + 5)}
    records = [(T0, wide), (T0 + 1, {"text": "x"}), (T0 + 2, {"f00": math.inf, 3: 4})]
    stream = make_stream(str(tmp_path), records)
    answer = series.downsample(stream, T0, T0 + 3, buckets=3, max_entries=100)
    assert len(answer["fields"]) == series.MAX_FIELDS
    assert answer["count"] == [1, 1, 1]
    assert answer["fields"]["f00"]["min"] == [0, None, None]


@pytest.mark.parametrize(
    ("since", "until", "buckets", "message"),
    [
        (T0, T0, 10, "must be before"),
        (math.nan, T0, 10, "finite"),
        (T0, math.inf, 10, "finite"),
        (T0, T0 + 1, 0, "at least 1"),
    ],
)
def test_bad_windows_are_refused_with_a_message(since, until, buckets, message) -> None:
    with pytest.raises(Malformed, match=message):
        series.check_window(since, until, buckets)
