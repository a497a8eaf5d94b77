"""A server-side SVG line plot of the numeric fields of recent entries (no script needed)."""

import html
import math
import time

WIDTH, HEIGHT, MARGIN = 900, 220, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e")


def numeric_series(entries: list[list]) -> dict[str, list[tuple[float, float]]]:
    """Top-level numeric fields of ``[seconds, record]`` entries, at most four, by first use."""
    series: dict[str, list[tuple[float, float]]] = {}
    for seconds, record in entries:
        if not isinstance(record, dict):
            continue
        for name, value in record.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                continue
            if name in series or len(series) < len(COLOURS):
                series.setdefault(name, []).append((seconds, float(value)))
    return {name: points for name, points in series.items() if len(points) > 1}


def svg(series: dict[str, list[tuple[float, float]]]) -> str:
    """One chart; each series scaled to its own range (the legend gives min and max)."""
    if not series:
        return ""
    times = [seconds for points in series.values() for seconds, _ in points]
    first, last = min(times), max(times)
    span = (last - first) or 1.0
    inner_width, inner_height = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    lines, legend = [], []
    for number, (name, points) in enumerate(series.items()):
        values = [value for _, value in points]
        low, high = min(values), max(values)
        height = (high - low) or 1.0
        coordinates = " ".join(
            f"{MARGIN + (seconds - first) / span * inner_width:.1f},"
            f"{HEIGHT - MARGIN - (value - low) / height * inner_height:.1f}"
            for seconds, value in points
        )
        colour = COLOURS[number]
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{coordinates}"/>'
        )
        legend.append(
            f'<text x="{MARGIN + number * 210}" y="16" fill="{colour}" font-size="12">'
            f"{html.escape(str(name))} ({low:g} – {high:g})</text>"
        )
    frame = (
        f'<rect x="{MARGIN}" y="{MARGIN}" width="{inner_width}" height="{inner_height}" '
        'fill="none" stroke="#ccc"/>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="recent values">{frame}{"".join(lines)}{"".join(legend)}'
        f"{time_axis(first, last)}</svg>"
    )


def time_axis(first: float, last: float) -> str:
    """Times under the frame's left end, middle and right end, in UTC.

    Clock times for a span under a day, dates with the hour and minute beyond, so that each
    label reads alone.
    """
    layout = "%H:%M:%S" if last - first < 86400 else "%Y-%m-%d %H:%M"
    y = HEIGHT - MARGIN + 18
    ticks = []
    for fraction, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        label = time.strftime(layout, time.gmtime(first + fraction * (last - first)))
        x = MARGIN + fraction * (WIDTH - 2 * MARGIN)
        ticks.append(
            f'<text x="{x:.1f}" y="{y}" text-anchor="{anchor}" fill="#555" font-size="12">'
            f"{label}{' UTC' if anchor == 'end' else ''}</text>"
        )
    return "".join(ticks)
