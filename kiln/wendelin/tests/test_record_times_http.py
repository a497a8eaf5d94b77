"""Event times taken from the records posted to /tags, as fluentd's in_http takes them, against
a real server process (and a real fluentd whose out_http sends them)."""

import json
import time
from pathlib import Path

import msgpack
import pytest
import requests

from kiln.testing.fluentd import Fluentd, tail_source
from kiln.testing.wendelin import ServerProcess, add_policy
from kiln.wendelin import eventtime

pytestmark = pytest.mark.integration

START = 1_700_000_000.0
HOUR = 3600.0


def entries(deployment, name: str) -> list[list]:
    response = requests.get(
        f"{deployment.url}/api/streams/{name}/entries",
        params={"format": "json", "limit": 100_000},
        auth=deployment.auth(),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def post(
    deployment, tag: str, body: bytes, content_type: str, query: str = ""
) -> requests.Response:
    return requests.post(
        f"{deployment.url}/tags/{tag}{query}",
        data=body,
        headers={"Content-Type": content_type},
        auth=deployment.auth(),
        timeout=30,
    )


def test_a_thousand_ndjson_records_spread_over_an_hour_keep_their_times(deployment) -> None:
    times = [START + index * HOUR / 999 for index in range(1000)]
    body = b"".join(
        json.dumps({"time": seconds, "power": index}).encode() + b"\n"
        for index, seconds in enumerate(times)
    )
    answer = post(deployment, "sensor.spread", body, "application/x-ndjson")
    assert answer.status_code == 204, answer.text
    stored = entries(deployment, "sensor.spread")
    assert [seconds for seconds, _ in stored] == pytest.approx(times, abs=1e-6)
    assert [record for _, record in stored] == [{"power": index} for index in range(1000)]
    stream = deployment.stream("sensor.spread")
    assert stream["entries"] == 1000
    assert stream["first_time"] == pytest.approx(START, abs=1e-6)
    assert stream["last_time"] == pytest.approx(START + HOUR, abs=1e-6)


def test_msgpack_records_and_json_arrays_keep_their_times(deployment) -> None:
    body = b"".join(
        msgpack.packb(record)
        for record in (
            {"time": int(START), "n": 0},
            [{"time": START + 1.5, "n": 1}, {"time": eventtime.pack(START + 2.25), "n": 2}],
            {"n": 3},  # no time of its own: the arrival time
        )
    )
    assert post(deployment, "sensor.packed", body, "application/x-msgpack").status_code == 204
    array = json.dumps([{"time": START + 4, "n": 4}, {"time": "1700000005.5", "n": 5}])
    assert post(deployment, "sensor.packed", array.encode(), "application/json").status_code == 204
    stored = entries(deployment, "sensor.packed")
    assert [record for _, record in stored] == [{"n": n} for n in range(6)]
    times = [seconds for seconds, _ in stored]
    assert times[:3] == pytest.approx([START, START + 1.5, START + 2.25], abs=1e-6)
    assert times[3] > START + HOUR * 24 * 365  # arrival, long after 2023
    assert times[4:] == pytest.approx([START + 4, START + 5.5], abs=1e-6)


def test_the_query_time_comes_first_and_leaves_the_records_alone_as_in_fluentd(
    deployment,
) -> None:
    body = b'{"time": 1700000000, "n": 0}\n{"n": 1}\n'
    answer = post(deployment, "sensor.query", body, "application/x-ndjson", "?time=1600000000")
    assert answer.status_code == 204, answer.text
    assert entries(deployment, "sensor.query") == [
        [1_600_000_000, {"time": 1_700_000_000, "n": 0}],
        [1_600_000_000, {"n": 1}],
    ]


@pytest.mark.parametrize(
    "body, content_type, says",
    [
        (b'{"n": 0}\n{"time": NaN, "n": 1}\n', "application/x-ndjson", "record 1 (counting"),
        (b'[{"time": Infinity}]', "application/json", "inf"),
        (b'{"time": -1}', "application/json", "'time' -1 cannot be an event time"),
        (b'{"time": {"seconds": 1}}', "application/json", "'time' {'seconds': 1} is a map"),
        (b'{"time": "yesterday"}', "application/json", "'yesterday' is a non-numeric string"),
        (msgpack.packb({"time": float("nan")}), "application/msgpack", "'time' nan"),
        (b'{"n": 1}', "application/json", "?time='soon': time must be"),
    ],
)
def test_bad_times_are_refused_naming_the_record_and_the_value(
    deployment, body: bytes, content_type: str, says: str
) -> None:
    query = "?time=soon" if "?time=" in says else ""
    answer = post(deployment, "sensor.badtime", body, content_type, query)
    assert answer.status_code == 400 and says in answer.text, answer.text
    assert deployment.stream("sensor.badtime") is None  # nothing of the request stored


def test_fluentds_out_http_sends_event_times_that_come_back(
    deployment, fluentd_program: Path, tmp_path: Path
) -> None:
    """A real fluentd 1.16.11: in_tail reads JSON lines and keeps their `time` in the records
    (`keep_time_key true`: out_http sends records only, without fluentd's event time and
    without `<inject>`), out_http posts them as ndjson, and the service takes `time` out as
    the event time."""
    times = [START + index * 36.0 for index in range(100)]
    lines = tmp_path / "lines.json"
    lines.write_text("".join(json.dumps({"time": t, "n": i}) + "\n" for i, t in enumerate(times)))
    user, password = deployment.auth()
    source = tail_source(lines, tmp_path / "pos", "sensor.fluentd", keep_time_key=True)
    config = (
        source
        + f"""
<match sensor.**>
  @type http
  endpoint {deployment.url}/tags/${{tag}}
  retryable_response_codes [503]
  <auth>
    method basic
    username "#{{ENV['WENDELIN_USER']}}"
    password "#{{ENV['WENDELIN_PASSWORD']}}"
  </auth>
  <buffer tag>
    flush_interval 0.2s
  </buffer>
</match>
"""
    )
    environment = {"WENDELIN_USER": user, "WENDELIN_PASSWORD": password}
    with Fluentd(fluentd_program, tmp_path / "fluentd", config, environment).wait_running():
        stored = _wait_for_entries(deployment, "sensor.fluentd", len(times))
    assert [seconds for seconds, _ in stored] == pytest.approx(times, abs=1e-6)
    assert [record for _, record in stored] == [{"n": n} for n in range(100)]


def _wait_for_entries(deployment, name: str, count: int, timeout: float = 60.0) -> list[list]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if deployment.stream(name) and deployment.stream(name)["entries"] >= count:
            return entries(deployment, name)
        time.sleep(0.2)
    raise TimeoutError(f"{name}: fewer than {count} entries after {timeout} s")


def test_the_time_key_and_keeping_it_are_serve_options(tmp_path: Path) -> None:
    credentials = add_policy(str(tmp_path), "plant")
    auth = (credentials["user"], credentials["password"])
    with ServerProcess(str(tmp_path), "--time-key", "ts", "--keep-time-key") as server:
        record = {"ts": START, "time": 5, "n": 1}
        answer = requests.post(f"{server.url}/tags/plant.ts", json=record, auth=auth, timeout=30)
        assert answer.status_code == 204, answer.text
        stored = requests.get(
            f"{server.url}/api/streams/plant.ts/entries?format=json", auth=auth, timeout=30
        ).json()
    assert stored == [[START, record]]
