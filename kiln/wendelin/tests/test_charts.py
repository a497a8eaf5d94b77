"""The stream pages' dygraphs charts in real headless Chromium, driven through DevTools:
rendered, zoomed by a mouse drag, and the finer window fetched from the series endpoint."""

import asyncio
import base64
import os
from urllib.parse import parse_qs, urlsplit

import msgpack
import pytest
import requests

from kiln.testing.chromium import keep, png_size
from kiln.testing.devtools import Browser
from kiln.testing.wendelin import add_policy
from kiln.wendelin import eventtime, static
from kiln.wendelin.server import make_app
from kiln.wendelin.service import Service

pytestmark = pytest.mark.integration
T0 = 1_700_000_000


@pytest.fixture(scope="module")
def turbine(deployment):
    if static.find_dygraphs(None) is None:
        message = "dygraphs is missing: npm ci --prefix kiln/wendelin/frontend (as .ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    """An hour of a turbine's records, one every 3 s, with two numeric fields and a text one."""
    body = b"".join(
        msgpack.packb(
            [
                eventtime.pack(T0 + 3 * n),
                {"turbine": "T1", "rpm": 1400 + (n % 200), "temp": 20 + (n % 600) / 60},
            ]
        )
        for n in range(1200)
    )
    url = f"{deployment.url}/ingestion_policies/turbines/ingest?reference=sensor.chart"
    assert requests.post(url, data=body, auth=deployment.auth()).status_code == 204
    return deployment


def basic(auth: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()}


def series_windows(page) -> list[tuple[float, float] | None]:
    windows = []
    for url in page.requests:
        if "/series?" in url:
            query = parse_qs(urlsplit(url).query)
            since, until = query.get("since"), query.get("until")
            windows.append((float(since[0]), float(until[0])) if since and until else None)
    return windows


def test_stream_chart_renders_and_a_drag_fetches_a_finer_window(turbine, tmp_path) -> None:
    with Browser() as browser:
        page = browser.open(f"{turbine.url}/streams/sensor.chart", basic(turbine.auth()))
        page.wait_for("document.querySelector('.charts')?.dataset.state === 'ready'")
        charts = page.evaluate("document.querySelectorAll('.chart canvas').length")
        assert charts >= 2  # a plot canvas per field (dygraphs draws two layers each)
        legends = page.evaluate(
            "[...document.querySelectorAll('.chart-legend')].map(l => l.textContent)"
        )
        assert any("rpm" in text for text in legends) and any("temp" in text for text in legends)
        first = page.evaluate("document.querySelector('.chart-note').textContent")
        assert first.startswith("1200 entries")
        shot = str(tmp_path / "wendelin-stream-chart.png")
        page.screenshot(shot)
        assert png_size(shot) == (1280, 900) and os.path.getsize(shot) > 20_000
        keep(shot)

        assert series_windows(page) == [None]  # the whole stream first
        box = page.evaluate(
            "(() => { const r = document.querySelector('.chart-plot canvas')"
            ".getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
        )
        left, top, width, height = box
        y = top + height / 2
        page.drag(left + width * 0.4, y, left + width * 0.6, y)
        page.wait_for(
            "document.querySelector('.charts').dataset.state === 'ready' && "
            "document.querySelector('.chart-note').textContent !== " + repr(first)
        )
        windows = series_windows(page)
        assert len(windows) == 2 and windows[1] is not None
        since, until = windows[1]
        assert T0 + 1000 < since < until < T0 + 2700  # about the middle fifth of the hour
        assert until - since < 1000
        zoomed = page.evaluate("document.querySelector('.chart-note').textContent")
        assert int(zoomed.split()[0]) < 400  # only the entries of that window were sent
        shot = str(tmp_path / "wendelin-stream-chart-zoomed.png")
        page.screenshot(shot)
        keep(shot)
        assert page.errors == [], page.requests


def test_hostile_field_names_are_shown_as_text(turbine) -> None:
    name = "<img src=x id=injected>"
    body = b"".join(msgpack.packb([eventtime.pack(T0 + n), {name: n}]) for n in range(5))
    url = f"{turbine.url}/ingestion_policies/turbines/ingest?reference=sensor.hostile"
    assert requests.post(url, data=body, auth=turbine.auth()).status_code == 204
    with Browser() as browser:
        page = browser.open(f"{turbine.url}/streams/sensor.hostile", basic(turbine.auth()))
        page.wait_for("document.querySelector('.charts')?.dataset.state === 'ready'")
        assert page.evaluate("document.querySelector('.dygraph-ylabel').textContent") == name
        assert page.evaluate("document.getElementById('injected')") is None
        assert page.errors == []


def test_pages_keep_a_strict_policy_and_serve_dygraphs_from_here(turbine) -> None:
    response = requests.get(f"{turbine.url}/streams/sensor.chart", auth=turbine.auth())
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-eval" not in policy
    assert "connect-src 'self'" in policy
    assert "<script>" not in response.text  # no inline script: files from /static only
    assert "/static/dygraphs/dygraph.min.js" in response.text
    library = requests.get(f"{turbine.url}/static/dygraphs/dygraph.min.js")
    assert library.status_code == 200 and "javascript" in library.headers["Content-Type"]
    assert b"dygraphs" in library.content[:200]  # the package's licence banner
    again = requests.get(
        f"{turbine.url}/static/dygraphs/dygraph.min.js",
        headers={"If-None-Match": library.headers["ETag"]},
    )
    assert again.status_code == 304
    for path in ("/static/../service.py", "/static/dygraphs/dygraph.js.map", "/static/nope.js"):
        assert requests.get(turbine.url + path).status_code == 404


def test_series_endpoint_answers_windows_and_refuses_bad_ones(turbine) -> None:
    url, auth = f"{turbine.url}/api/streams/sensor.chart/series", turbine.auth()
    whole = requests.get(url, params={"buckets": 60}, auth=auth).json()
    assert whole["entries"] == 1200 and whole["complete"] and len(whole["time"]) == 60
    assert whole["fields"]["rpm"]["min"][0] == 1400 and set(whole["fields"]) == {"rpm", "temp"}
    part = requests.get(url, params={"since": T0, "until": T0 + 30}, auth=auth).json()
    assert part["entries"] == 10
    capped = requests.get(url, params={"buckets": 10**9}, auth=auth).json()
    assert capped["buckets"] == 4000  # --max-series-buckets
    for params, message in (
        ({"since": T0 + 10, "until": T0}, "must be before"),
        ({"since": "soon"}, "?since= must be a number"),
        ({"buckets": 0}, "at least 1"),
        ({"since": "nan", "until": T0}, "finite"),
    ):
        response = requests.get(url, params=params, auth=auth)
        assert response.status_code == 400 and message in response.text, response.text
    assert requests.get(url).status_code == 401
    raw = requests.put(f"{turbine.url}/api/streams/sensor.rawfile", data=b"x", auth=auth)
    assert raw.status_code in (201, 204), raw.text
    refused = requests.get(f"{turbine.url}/api/streams/sensor.rawfile/series", auth=auth)
    assert refused.status_code == 409 and "raw bytes" in refused.text


def test_without_dygraphs_the_page_says_how_to_install_it(tmp_path) -> None:
    """The service as `serve` runs it when no dygraphs is found (in-process, real sockets)."""
    from aiohttp.test_utils import TestClient, TestServer

    root = str(tmp_path)
    credentials = add_policy(root, "turbines", "--tag-pattern", "sensor.**")
    auth = basic((credentials["user"], credentials["password"]))

    async def visit() -> tuple[str, int]:
        service = Service(root)
        async with TestClient(TestServer(make_app(service, dygraphs=None))) as client:
            posted = await client.post("/tags/sensor.bare", json={"rpm": 1}, headers=auth)
            assert posted.status == 204, await posted.text()
            page = await (await client.get("/streams/sensor.bare", headers=auth)).text()
            library = await client.get("/static/dygraphs/dygraph.min.js")
        await service.close()
        return page, library.status

    page, library_status = asyncio.run(visit())
    assert "Charts need dygraphs" in page and "npm ci --prefix kiln/wendelin/frontend" in page
    assert "<script" not in page and library_status == 404
    assert "Latest entries" in page  # the rest of the page is there


def test_array_page_shows_metadata_and_a_drag_fetches_a_finer_window(turbine, tmp_path) -> None:
    """A million-row array with provenance, written by the store as a transformation would."""
    import numpy as np

    from kiln.wendelin.arrays.store import ArrayStore, Provenance

    rows = np.arange(1_000_000, dtype=np.float32)
    values = np.sin(rows / 20_000) * 100 + (rows % 997) / 100
    store = ArrayStore(os.path.join(turbine.server.root, "arrays"))
    array = store.create(
        "turbine.wave",
        np.float32,
        attributes={"unit": "mm", "rate": 1000},
        policy="turbines",
        source=Provenance("sensor.chart", 0, 52_800),
    )
    array.append(values, consumed=52_800)

    with Browser() as browser:
        page = browser.open(f"{turbine.url}/arrays/turbine.wave", basic(turbine.auth()))
        page.wait_for("document.querySelector('.charts')?.dataset.state === 'ready'")
        text = page.evaluate("document.body.innerText")
        assert "<f4 (float32)" in text and "1000000" in text and '"unit": "mm"' in text
        link = page.evaluate("document.querySelector('a[href=\"/streams/sensor.chart\"]')?.href")
        assert link and "bytes 0–52800" in text  # provenance, linking to the source stream
        assert page.evaluate("document.querySelectorAll('.chart canvas').length") >= 1
        shot = str(tmp_path / "wendelin-array-chart.png")
        page.screenshot(shot)
        keep(shot)

        first = page.evaluate("document.querySelector('.chart-note').textContent")
        box = page.evaluate(
            "(() => { const r = document.querySelector('.chart-plot canvas')"
            ".getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
        )
        left, top, width, height = box
        page.drag(left + width * 0.3, top + height / 2, left + width * 0.35, top + height / 2)
        page.wait_for(
            "document.querySelector('.charts').dataset.state === 'ready' && "
            "document.querySelector('.chart-note').textContent !== " + repr(first)
        )
        windows = [parse_qs(urlsplit(url).query) for url in page.requests if "/window?" in url]
        assert len(windows) == 2 and "start" not in windows[0]  # the whole array first
        start, stop = int(windows[1]["start"][0]), int(windows[1]["stop"][0])
        assert 250_000 < start < stop < 400_000 and stop - start < 80_000
        shot = str(tmp_path / "wendelin-array-chart-zoomed.png")
        page.screenshot(shot)
        keep(shot)
        assert page.errors == [], page.requests

    missing = requests.get(f"{turbine.url}/arrays/no.such", auth=turbine.auth())
    assert missing.status_code == 404
    bad = requests.get(f"{turbine.url}/arrays/turbine.wave?column=3", auth=turbine.auth())
    assert bad.status_code == 400 and "column" in bad.text
