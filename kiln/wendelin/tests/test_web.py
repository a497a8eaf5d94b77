"""Web pages in real headless Chromium (Debian's `chromium`), with screenshots."""

import os

import msgpack
import pytest
import requests

from kiln.testing.chromium import browse, keep, png_size
from kiln.wendelin import eventtime

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(deployment):
    auth = deployment.auth()
    body = b"".join(
        msgpack.packb([eventtime.pack(1_700_000_000 + n), {"turbine": "T7", "rpm": 1400 + n}])
        for n in range(60)
    )
    url = f"{deployment.url}/ingestion_policies/turbines/ingest?reference=sensor.web"
    assert requests.post(url, data=body, auth=auth).status_code == 204
    user, password = auth
    return deployment, f"http://{user}:{password}@127.0.0.1:{deployment.server.http_port}"


def test_overview_page_lists_policies_and_streams(site, tmp_path) -> None:
    _, base = site
    dom = browse(base + "/", "--dump-dom").stdout
    assert "Ingestion policies" in dom and "sensor.**" in dom
    assert "sensor.web" in dom and ">60<" in dom  # its entry count
    shot = str(tmp_path / "wendelin-overview.png")
    browse(base + "/", f"--screenshot={shot}")
    assert png_size(shot) == (1280, 900)
    assert os.path.getsize(shot) > 10_000  # a rendered page, not a blank image
    keep(shot)


def test_stream_page_shows_latest_entries_and_forms(site, tmp_path) -> None:
    _, base = site
    dom = browse(base + "/streams/sensor.web", "--dump-dom").stdout
    assert "Latest entries" in dom
    assert "&quot;rpm&quot;: 1459" in dom or '"rpm": 1459' in dom  # the newest entry
    assert "Append an entry" in dom
    assert "Numeric fields over event time" in dom  # the chart (tests: test_charts.py)
    shot = str(tmp_path / "wendelin-stream.png")
    browse(base + "/streams/sensor.web", f"--screenshot={shot}")
    assert png_size(shot) == (1280, 900)
    keep(shot)


def test_forms_append_and_upload_and_refuse_other_origins(site) -> None:
    deployment, _ = site
    auth, url = deployment.auth(), deployment.url
    origin = {"Origin": url}
    response = requests.post(
        f"{url}/streams/sensor.web/append",
        data={"record": '{"note": "from the form"}'},
        headers=origin,
        auth=auth,
        allow_redirects=False,
    )
    assert response.status_code == 303
    assert deployment.records("sensor.web")[-1] == {"note": "from the form"}
    response = requests.post(
        f"{url}/upload",
        files=[("name", (None, "sensor.upload")), ("file", ("a.bin", b"\x00\x01" * 1000))],
        headers=origin,
        auth=auth,
        allow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert deployment.stream("sensor.upload")["size"] == 2000
    foreign = requests.post(
        f"{url}/streams/sensor.web/append",
        data={"record": "{}"},
        headers={"Origin": "http://evil.example"},
        auth=auth,
    )
    assert foreign.status_code == 403


def test_pages_need_credentials(site) -> None:
    deployment, _ = site
    response = requests.get(deployment.url + "/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
