"""HTTP ingest as fluent-plugin-wendelin and curl use it, against a real server process."""

import socket
import struct
import time
import urllib.parse

import msgpack
import pytest
import requests

from kiln.testing.wendelin import add_policy, cli

pytestmark = pytest.mark.integration


def event(seconds: int, record: dict) -> bytes:
    return msgpack.packb(
        [msgpack.ExtType(0, struct.pack(">II", seconds, 123)), record], use_bin_type=True
    )


def ingest_url(deployment, tag: str, policy: str = "turbines", alias: bool = False) -> str:
    prefix = "/erp5/portal_ingestion_policies" if alias else "/ingestion_policies"
    return f"{deployment.url}{prefix}/{policy}/ingest?reference={tag}"


def post_like_fluentd(url: str, auth: tuple[str, str], body: bytes, attempts: int = 20) -> int:
    """out_http/fluent-plugin-wendelin: resend the same bytes until a 2xx (503 retried)."""
    delay = 0.05
    for _ in range(attempts):
        try:
            response = requests.post(url, data=body, auth=auth, timeout=10)
        except requests.ConnectionError:
            response = None
        if response is not None and response.status_code < 300:
            return response.status_code
        if response is not None and response.status_code != 503:
            return response.status_code
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise AssertionError("never accepted")


def test_chunks_are_stored_with_their_timestamps_on_both_paths(deployment) -> None:
    first = event(1_700_000_000, {"temp": 20.5}) + event(1_700_000_001, {"temp": 21.0})
    second = event(1_700_000_002, {"temp": 22.0})
    auth = deployment.auth()
    assert post_like_fluentd(ingest_url(deployment, "sensor.http"), auth, first) == 204
    assert post_like_fluentd(ingest_url(deployment, "sensor.http", alias=True), auth, second) == 204
    entries = requests.get(
        f"{deployment.url}/api/streams/sensor.http/entries?format=json", auth=auth
    ).json()
    assert entries == [
        [pytest.approx(1_700_000_000.000000123), {"temp": 20.5}],
        [pytest.approx(1_700_000_001.000000123), {"temp": 21.0}],
        [pytest.approx(1_700_000_002.000000123), {"temp": 22.0}],
    ]
    stored = requests.get(f"{deployment.url}/api/streams/sensor.http/data", auth=auth).content
    assert stored == first + second  # the stored bytes are the chunks, byte for byte


def test_a_resend_after_a_lost_answer_is_not_appended_twice(deployment) -> None:
    body = event(1_700_000_100, {"id": "once"})
    user, password = deployment.auth()
    url = urllib.parse.urlsplit(ingest_url(deployment, "sensor.retry"))
    credentials = __import__("base64").b64encode(f"{user}:{password}".encode()).decode()
    request = (
        f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Basic {credentials}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    # The client gives up before the answer (a timeout), as fluentd does, then resends.
    with socket.create_connection(("127.0.0.1", deployment.server.http_port)) as connection:
        connection.sendall(request)
    time.sleep(0.3)
    response = requests.post(url.geturl(), data=body, auth=(user, password))
    assert response.status_code == 204
    assert response.headers.get("X-Wendelin-Duplicate")
    assert deployment.records("sensor.retry") == [{"id": "once"}]


def test_old_plugins_form_encoded_data_chunk(deployment) -> None:
    body = event(1_700_000_200, {"form": True})
    response = requests.post(
        ingest_url(deployment, "sensor.form"),
        data={"data_chunk": body},
        auth=deployment.auth(),
    )
    assert response.status_code == 204
    assert deployment.records("sensor.form") == [{"form": True}]


def test_ruby_net_http_form_content_type_on_a_raw_body_is_fine(deployment) -> None:
    response = requests.post(
        ingest_url(deployment, "sensor.labelled"),
        data=event(1, {"raw": 1}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=deployment.auth(),
    )
    assert response.status_code == 204


GOOD = event(1_700_000_300, {"ok": 1})


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("malformed", 400, "malformed msgpack"),
        ("truncated", 400, "truncated body"),
        ("wrong_ext", 400, "unsupported msgpack ext type 7"),
        ("not_entries", 400, "not a [time, record] array"),
        ("wrong_password", 401, "wrong or missing credentials"),
        ("other_policys_password", 401, "wrong or missing credentials"),
        ("no_credentials", 401, "wrong or missing credentials"),
        ("unknown_policy", 401, "wrong or missing credentials for policy 'nope'"),
        ("too_large", 413, "larger than the limit"),
        ("tag_not_accepted", 403, "does not accept tag 'elsewhere.t1'"),
        ("bad_tag", 403, "cannot name a stream"),
        ("missing_reference", 400, "missing ?reference"),
    ],
)
def test_bad_requests_get_a_clear_error_and_append_nothing(
    deployment, case: str, status: int, message: str
) -> None:
    assert post_like_fluentd(ingest_url(deployment, "sensor.bad"), deployment.auth(), GOOD) == 204
    before = deployment.stream("sensor.bad")
    url, auth, body = ingest_url(deployment, "sensor.bad"), deployment.auth(), GOOD
    if case == "malformed":
        body = b"\xc1\xc1\xc1"
    elif case == "truncated":
        body = GOOD + GOOD[:-3]
    elif case == "wrong_ext":
        body = GOOD + msgpack.packb([msgpack.ExtType(7, b"\0" * 8), {"x": 1}])
    elif case == "not_entries":
        body = msgpack.packb({"time": 1, "record": {}})
    elif case == "wrong_password":
        auth = (auth[0], "guessed")
    elif case == "other_policys_password":
        auth = deployment.auth("secure")
    elif case == "no_credentials":
        auth = None
    elif case == "unknown_policy":
        url = ingest_url(deployment, "sensor.bad", policy="nope")
    elif case == "too_large":
        body = GOOD * (2 * (1 << 20) // len(GOOD))
    elif case == "tag_not_accepted":
        url = ingest_url(deployment, "elsewhere.t1")
    elif case == "bad_tag":
        url = ingest_url(deployment, "sensor.a%20b")
    elif case == "missing_reference":
        url = url.split("?")[0]
    response = requests.post(url, data=body, auth=auth)
    assert response.status_code == status
    assert message in response.text
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert deployment.stream("sensor.bad") == before
    assert deployment.stream("elsewhere.t1") is None


def test_entries_for_a_raw_byte_stream_are_refused_with_a_conflict(deployment) -> None:
    upload = requests.put(
        f"{deployment.url}/api/streams/sensor.recording", data=b"RIFF....", auth=deployment.auth()
    )
    assert upload.status_code == 201
    response = requests.post(
        ingest_url(deployment, "sensor.recording"), data=GOOD, auth=deployment.auth()
    )
    assert response.status_code == 409 and "holds raw bytes" in response.text
    assert deployment.stream("sensor.recording")["size"] == len(b"RIFF....")


def test_only_post_is_accepted_like_wendelin(deployment) -> None:
    response = requests.get(ingest_url(deployment, "sensor.x"), auth=deployment.auth())
    assert response.status_code == 400


def test_tags_endpoint_takes_json_ndjson_msgpack_and_forms(deployment) -> None:
    url, auth = f"{deployment.url}/tags/sensor.curl", deployment.auth()
    assert requests.post(url, json={"a": 1}, auth=auth).status_code == 204
    assert requests.post(url + "?time=1700000000.5", json=[{"b": 2}, {"c": 3}], auth=auth).ok
    ndjson = b'{"d": 4}\n{"e": 5}\n'
    headers = {"Content-Type": "application/x-ndjson"}
    assert requests.post(url, data=ndjson, headers=headers, auth=auth).status_code == 204
    headers = {"Content-Type": "application/msgpack"}
    assert requests.post(url, data=msgpack.packb({"f": 6}), headers=headers, auth=auth).ok
    assert requests.post(url, data={"json": '{"g": 7}'}, auth=auth).status_code == 204
    bad = requests.post(url, data=b"{nope", headers={"Content-Type": "application/json"}, auth=auth)
    assert bad.status_code == 400
    assert requests.post(f"{deployment.url}/tags/other", json={}, auth=auth).status_code == 403
    assert deployment.records("sensor.curl") == [
        {"a": 1},
        {"b": 2},
        {"c": 3},
        {"d": 4},
        {"e": 5},
        {"f": 6},
        {"g": 7},
    ]
    entries = requests.get(
        url.replace("/tags/", "/api/streams/") + "/entries?format=json", auth=auth
    ).json()
    assert entries[1][0] == 1_700_000_000.5


def test_tags_endpoint_takes_out_https_msgpack_chunks(deployment) -> None:
    """fluentd's out_http with `<format> @type msgpack` posts the records back to back."""
    url, auth = f"{deployment.url}/tags/sensor.outhttp", deployment.auth()
    headers = {"Content-Type": "application/x-msgpack"}
    chunk = b"".join(msgpack.packb({"n": n}) for n in range(3))
    assert requests.post(url, data=chunk, headers=headers, auth=auth).status_code == 204
    truncated = requests.post(url, data=chunk[:-2], headers=headers, auth=auth)
    assert truncated.status_code == 400 and "truncated msgpack" in truncated.text
    assert deployment.records("sensor.outhttp") == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_policies_added_and_removed_by_the_cli_apply_without_restart(deployment) -> None:
    root = deployment.server.root
    credentials = add_policy(root, "late", "--tag-pattern", "late.*")
    auth = (credentials["user"], credentials["password"])
    url = ingest_url(deployment, "late.one", policy="late")
    assert requests.post(url, data=GOOD, auth=auth).status_code == 204
    cli("policy", "remove", "--root", root, "late")
    assert (
        requests.post(url, data=GOOD, auth=auth).status_code == 401
    )  # a removed policy is like an unknown one


def test_wrong_passwords_do_not_stall_other_requests(deployment) -> None:
    """scrypt (about 50 ms each) runs in a worker thread: 20 wrong passwords at once would
    stall the event loop for a second if it ran there."""
    import concurrent.futures
    import time

    url, (user, _) = ingest_url(deployment, "sensor.stall"), deployment.auth()

    def guess(number: int) -> int:
        return requests.post(url, data=GOOD, auth=(user, f"guess{number}"), timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        guesses = [pool.submit(guess, number) for number in range(20)]
        time.sleep(0.05)  # the guesses are being checked now
        slowest = 0.0
        while not all(future.done() for future in guesses):
            started = time.perf_counter()
            assert requests.get(f"{deployment.url}/healthz", timeout=10).ok
            slowest = max(slowest, time.perf_counter() - started)
        assert [future.result() for future in guesses] == [401] * 20
    assert slowest < 0.3, f"health check waited {slowest:.3f} s behind password checks"
    assert deployment.stream("sensor.stall") is None
