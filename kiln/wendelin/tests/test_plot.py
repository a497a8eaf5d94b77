"""The stream page's SVG plot: series picked from records, and a readable time axis."""

import pytest

from kiln.wendelin import plot

pytestmark = pytest.mark.unit


def test_numeric_fields_become_series_and_the_rest_is_left_out() -> None:
    entries = [
        [1_700_000_000.0 + n, {"rpm": 1400 + n, "ok": True, "site": "T7", "bad": float("nan")}]
        for n in range(3)
    ]
    assert plot.numeric_series(entries) == {
        "rpm": [(1_700_000_000.0, 1400.0), (1_700_000_001.0, 1401.0), (1_700_000_002.0, 1402.0)]
    }


def test_the_time_axis_labels_both_ends_and_the_middle_in_utc() -> None:
    # 2023-11-14 22:13:20 UTC to a minute later.
    chart = plot.svg({"rpm": [(1_700_000_000.0, 1.0), (1_700_000_060.0, 2.0)]})
    assert ">22:13:20</text>" in chart and ">22:13:50</text>" in chart
    assert ">22:14:20 UTC</text>" in chart


def test_a_span_of_days_is_labelled_with_dates() -> None:
    chart = plot.svg({"rpm": [(1_700_000_000.0, 1.0), (1_700_000_000.0 + 3 * 86400, 2.0)]})
    assert ">2023-11-14 22:13</text>" in chart and ">2023-11-17 22:13 UTC</text>" in chart
