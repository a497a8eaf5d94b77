"""Downsampled series of a record stream's numeric fields, for charts that zoom.

A chart never needs more points than it has pixels: ``downsample`` splits a time window into
``buckets`` equal slices of event time and answers, per slice and per numeric field, the
minimum, maximum and mean of the values in it (the time of a slice is the mean event time of
its entries, so sparse streams keep their real times). Reading is bounded: at most
``max_entries`` entries are read per call, and an answer that stopped there says so
(``complete`` false), so a client zooms in instead of the server reading a whole stream.
It runs in a worker thread (``Service.conversions``), never on the event loop.
"""

import math
from dataclasses import dataclass, field

from kiln.wendelin import chunks, eventtime
from kiln.wendelin.refusals import Malformed
from kiln.wendelin.stream_reader import StreamReader

# Numeric fields charted per stream, by first appearance; more would not read as a chart.
MAX_FIELDS = 16
# Entries decoded per scan_entries call: memory per step stays small whatever the window.
_PAGE = 10_000


@dataclass(slots=True)
class _Field:
    """Per-bucket accumulators of one field, grown as buckets are first touched."""

    minimum: dict[int, float] = field(default_factory=dict)
    maximum: dict[int, float] = field(default_factory=dict)
    total: dict[int, float] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=dict)

    def add(self, bucket: int, value: float) -> None:
        if bucket in self.count:
            self.minimum[bucket] = min(self.minimum[bucket], value)
            self.maximum[bucket] = max(self.maximum[bucket], value)
            self.total[bucket] += value
            self.count[bucket] += 1
        else:
            self.minimum[bucket] = self.maximum[bucket] = self.total[bucket] = value
            self.count[bucket] = 1


def default_window(stream: StreamReader) -> tuple[float, float] | None:
    """The whole stream's event times, ``until`` just past the last one (it is exclusive)."""
    first, last = stream.stats.first_time, stream.stats.last_time
    if math.isnan(first) or math.isnan(last):
        return None
    return first, math.nextafter(last, math.inf)


def check_window(since: float, until: float, buckets: int) -> None:
    if not (math.isfinite(since) and math.isfinite(until)):
        raise Malformed("?since= and ?until= must be finite numbers of seconds")
    if since >= until:
        raise Malformed(f"?since= ({since}) must be before ?until= ({until})")
    if buckets < 1:
        raise Malformed("?buckets= must be at least 1")


def downsample(
    stream: StreamReader, since: float, until: float, buckets: int, max_entries: int
) -> dict[str, object]:
    """Min, max and mean per time bucket of each numeric top-level field, as JSON-ready data.

    ``time`` lists the non-empty buckets' mean event times; each field's ``min``, ``max`` and
    ``mean`` are aligned with it, ``None`` where the field had no value in that bucket.
    """
    check_window(since, until, buckets)
    width = (until - since) / buckets
    fields: dict[str, _Field] = {}
    times: dict[int, float] = {}
    counts: dict[int, int] = {}
    read = 0
    start: int | None = 0
    while start is not None and read < max_entries:
        data, start = stream.scan_entries(
            start, since=since, until=until, limit=min(_PAGE, max_entries - read)
        )
        for stamp, record in chunks.iter_entries(data):
            read += 1
            seconds = eventtime.to_seconds(stamp)
            bucket = min(int((seconds - since) / width), buckets - 1)
            times[bucket] = times.get(bucket, 0.0) + seconds
            counts[bucket] = counts.get(bucket, 0) + 1
            if isinstance(record, dict):
                _add_numbers(fields, bucket, record)
    order = sorted(counts)
    return {
        "stream": stream.name,
        "since": since,
        "until": until,
        "buckets": buckets,
        "entries": read,
        # False: more entries lie in the window than one answer reads; zoom in for them.
        "complete": start is None,
        "time": [times[bucket] / counts[bucket] for bucket in order],
        "count": [counts[bucket] for bucket in order],
        "fields": {
            name: {
                "min": [values.minimum.get(bucket) for bucket in order],
                "max": [values.maximum.get(bucket) for bucket in order],
                "mean": [
                    values.total[bucket] / values.count[bucket] if bucket in values.count else None
                    for bucket in order
                ],
            }
            for name, values in fields.items()
        },
    }


def _add_numbers(fields: dict[str, _Field], bucket: int, record: dict) -> None:
    for name, value in record.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value) or not isinstance(name, str):
            continue
        values = fields.get(name)
        if values is None:
            if len(fields) >= MAX_FIELDS:
                continue
            values = fields[name] = _Field()
        values.add(bucket, float(value))
