"""The HTTP port against browsers (CSRF), bad input, floods, slow clients and snooping.

Each test talks to a real `kiln wendelin serve` over real sockets.
"""

import concurrent.futures
import json
import os
import socket
import stat
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack
import pytest
import requests

from kiln.testing.wendelin import HealthProbe, ServerProcess, add_policy
from kiln.wendelin import eventtime

pytestmark = pytest.mark.integration
EVIL = "https://evil.example"


@dataclass
class Site:
    server: ServerProcess
    auth: tuple[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def origin(self) -> str:
        return self.server.url  # what a browser sends from our own pages

    def entries(self, stream: str) -> list:
        answer = requests.get(
            f"{self.url}/api/streams/{stream}/entries",
            params={"format": "json", "limit": 100_000},
            auth=self.auth,
            timeout=60,
        )
        return answer.json() if answer.ok else []


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = str(tmp_path_factory.mktemp("wendelin"))
    policy = add_policy(root, "plant", "--tag-pattern", "plant.**")
    server = ServerProcess(root, "--password-queue", "4").start()
    yield Site(server, (policy["user"], policy["password"]))
    server.stop()


def post_tag(site: Site, tag: str, **options: object) -> requests.Response:
    options.setdefault("auth", site.auth)
    return requests.post(f"{site.url}/tags/{tag}", timeout=30, **options)  # type: ignore[arg-type]


# -- 5. CSRF ----------------------------------------------------------------------------------


def test_a_cross_site_text_plain_post_to_tags_stores_nothing(site: Site) -> None:
    """Before: stored (204)."""
    answer = post_tag(
        site,
        "plant.csrf",
        data='{"value": 1}',
        headers={"Origin": EVIL, "Content-Type": "text/plain"},
    )
    assert answer.status_code == 403
    assert "cross-site request refused" in answer.text
    assert site.entries("plant.csrf") == []


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/tags/plant.csrf", {"Origin": EVIL, "Content-Type": "application/json"}),
        ("/tags/plant.csrf", {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}),
        ("/tags/plant.csrf", {"Origin": "null", "Content-Type": "application/json"}),
        ("/ingestion_policies/plant/ingest?reference=plant.csrf", {"Origin": EVIL}),
        ("/api/streams/plant.csrf/append", {"Sec-Fetch-Site": "same-site"}),
        ("/streams/plant.csrf/append", {"Origin": EVIL}),
        ("/upload", {"Sec-Fetch-Site": "cross-site"}),
    ],
)
def test_every_state_changing_route_refuses_cross_site_requests(
    site: Site, path: str, headers: dict[str, str]
) -> None:
    answer = requests.post(
        site.url + path, data=b'{"value": 1}', headers=headers, auth=site.auth, timeout=30
    )
    assert answer.status_code == 403, answer.text
    assert site.entries("plant.csrf") == []


@pytest.mark.parametrize("origin", [None, "null"])
def test_the_append_form_needs_a_same_origin_browser(site: Site, origin: str | None) -> None:
    """Before: accepted with ``Origin: null`` or none (a cached Basic login was enough)."""
    tag = f"plant.form-{origin or 'none'}"
    assert post_tag(site, tag, json={"value": 0}).status_code == 204
    headers = {} if origin is None else {"Origin": origin}
    answer = requests.post(
        f"{site.url}/streams/{tag}/append",
        data={"record": '{"value": 1}'},
        headers=headers,
        auth=site.auth,
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 403
    assert [record for _, record in site.entries(tag)] == [{"value": 0}]


@pytest.mark.parametrize(
    "headers", [{"Origin": "same"}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}]
)
def test_the_append_form_works_from_our_own_pages(site: Site, headers: dict[str, str]) -> None:
    assert post_tag(site, "plant.own", json={"value": 0}).status_code == 204
    headers = {name: site.origin if value == "same" else value for name, value in headers.items()}
    answer = requests.post(
        f"{site.url}/streams/plant.own/append",
        data={"record": '{"value": 1}'},
        headers=headers,
        auth=site.auth,
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 303, answer.text


@pytest.mark.parametrize(
    "path", ["/tags/plant.plain", "/ingestion_policies/plant/ingest?reference=plant.plain"]
)
def test_ingest_refuses_text_plain_naming_what_it_takes(site: Site, path: str) -> None:
    answer = requests.post(
        site.url + path,
        data=b"x",
        headers={"Content-Type": "text/plain"},
        auth=site.auth,
        timeout=30,
    )
    assert answer.status_code == 415
    assert "text/plain" in answer.text
    assert "application/x-msgpack" in answer.text


# -- 8. bad input -----------------------------------------------------------------------------


def nested_record_bytes(depth: int) -> bytes:
    """An entry whose record nests ``depth`` maps (msgpack's own packer stops at 512)."""
    record = b"\x81\xa1a" * (depth - 1) + b"\x81\xa1a\x01"
    return b"\x92" + msgpack.packb(eventtime.pack(1_700_000_000.0)) + record


@pytest.mark.parametrize("when", ["inf", "nan", "-5", "1e300", "-inf"])
def test_a_bad_time_is_a_400(site: Site, when: str) -> None:
    answer = post_tag(site, "plant.time", json={"value": 1}, params={"time": when})
    assert answer.status_code == 400, answer.text
    assert "time must be" in answer.text


@pytest.mark.parametrize(
    ("path", "body", "kind", "message"),
    [
        ("/api/streams/plant.bad/append", b'{"time": [1], "record": {}}', "json", "time must be"),
        ("/api/streams/plant.bad/append", b'{"time": 1e300, "record": {}}', "json", "time must"),
        ("/tags/plant.bad", b"[" * 100_000 + b"]" * 100_000, "json", "nested too deeply"),
        ("/tags/plant.bad", b'{"a":' * 900 + b"1" + b"}" * 900, "json", "nested"),
        ("/tags/plant.bad", b"\x81\xa1a" * 899 + b"\x81\xa1a\x01", "msgpack", "nested deeper"),
        ("/ingestion_policies/plant/ingest?reference=plant.bad", None, None, "nested deeper"),
    ],
)
def test_bad_bodies_are_a_400_and_stored_records_stay_readable(
    site: Site, path: str, body: bytes | None, kind: str | None, message: str
) -> None:
    assert post_tag(site, "plant.bad", json={"value": 0}).status_code == 204
    headers = {"Content-Type": f"application/{kind}"} if kind else {}
    answer = requests.post(
        site.url + path,
        data=nested_record_bytes(900) if body is None else body,
        headers=headers,
        auth=site.auth,
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert message in answer.text
    assert requests.get(f"{site.url}/streams/plant.bad", auth=site.auth, timeout=30).ok
    assert [record for _, record in site.entries("plant.bad")][-1] == {"value": 0}


# -- 9. enumeration ---------------------------------------------------------------------------


def test_unknown_and_known_policies_answer_alike_without_credentials(site: Site) -> None:
    """Before: 404 for an unknown policy, 401 for a known one."""
    answers = [
        requests.post(
            f"{site.url}/ingestion_policies/{name}/ingest?reference=plant.x", data=b"", timeout=30
        )
        for name in ("plant", "no-such-policy")
    ]
    assert [answer.status_code for answer in answers] == [401, 401]


def test_a_wrong_user_costs_as_long_as_a_wrong_password(site: Site) -> None:
    """Before: an unknown user was answered at once, a known one after scrypt (~50 ms)."""

    def timed(user: str) -> float:
        started = time.perf_counter()
        answer = post_tag(site, "plant.t", json={}, auth=(user, "wrong"))
        assert answer.status_code == 401
        return time.perf_counter() - started

    known = statistics.median(timed(site.auth[0]) for _ in range(7))
    unknown = statistics.median(timed("nobody-at-all") for _ in range(7))
    assert 0.5 < unknown / known < 2, (known, unknown)


# -- 3. password flood ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_password_flood_gets_503_and_leaves_health_and_ingest_alone(site: Site) -> None:
    """One scrypt at a time, at most 4 waiting (--password-queue 4): the rest get 503 with
    Retry-After at once; health checks and an already logged-in sender go on."""
    assert post_tag(site, "plant.flood", json={"n": 0}).status_code == 204  # login cached
    with HealthProbe(site.url) as probe, concurrent.futures.ThreadPoolExecutor(40) as pool:
        guesses = [
            pool.submit(post_tag, site, "plant.flood", json={}, auth=(site.auth[0], f"g{n}"))
            for n in range(120)
        ]
        started = time.perf_counter()
        assert post_tag(site, "plant.flood", json={"n": 1}).status_code == 204
        cached_ingest = time.perf_counter() - started
        answers = [guess.result() for guess in guesses]
    statuses = {answer.status_code for answer in answers}
    assert statuses <= {401, 503} and 503 in statuses
    assert all(a.headers.get("Retry-After") for a in answers if a.status_code == 503)
    assert cached_ingest < 1.0
    assert probe.slowest < 0.5


# -- 7. large reads ---------------------------------------------------------------------------


@pytest.mark.slow
def test_large_json_reads_leave_health_checks_alone(site: Site) -> None:
    """Five reads of 100,000 entries as JSON stalled /healthz for 8.9 s on the event loop."""
    entry = msgpack.packb([eventtime.pack(1_700_000_000.0), {"value": 1.5, "text": "x" * 40}])
    ingest = f"{site.url}/ingestion_policies/plant/ingest?reference=plant.big"
    assert requests.post(ingest, data=entry * 100_000, auth=site.auth).status_code == 204

    def read(_: int) -> bytes:  # parsed after the probe: json.loads here would hold our GIL
        answer = requests.get(
            f"{site.url}/api/streams/plant.big/entries",
            params={"format": "json", "limit": 100_000},
            auth=site.auth,
            timeout=60,
        )
        assert answer.ok, answer.text
        return answer.content

    with HealthProbe(site.url) as probe, concurrent.futures.ThreadPoolExecutor(5) as pool:
        bodies = list(pool.map(read, range(5)))
    assert [len(json.loads(body)) for body in bodies] == [100_000] * 5
    assert probe.slowest < 0.5, f"/healthz took {probe.slowest:.2f} s"


def test_pages_of_entries_are_bounded(tmp_path) -> None:
    root = str(tmp_path / "root")
    policy = add_policy(root, "plant", "--tag-pattern", "plant.**")
    with ServerProcess(root, "--max-page-entries", "10") as server:
        auth = (policy["user"], policy["password"])
        records = [{"n": n} for n in range(25)]
        answer = requests.post(f"{server.url}/tags/plant.page", json=records, auth=auth)
        assert answer.status_code == 204
        page = requests.get(
            f"{server.url}/api/streams/plant.page/entries",
            params={"limit": 1000, "format": "json"},
            auth=auth,
        )
        assert len(page.json()) == 10
        assert page.headers["X-Next-Start"] == "10"


# -- 10. headers ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/streams/plant.headers"])
def test_pages_carry_security_headers_and_no_version_banner(site: Site, path: str) -> None:
    assert post_tag(site, "plant.headers", json={"value": 1}).status_code == 204
    answer = requests.get(site.url + path, auth=site.auth, timeout=30)
    assert answer.ok and answer.headers["Content-Type"].startswith("text/html")
    policy = answer.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "same-origin"
    assert answer.headers["Server"] == "wendelin"
    missing = requests.get(site.url + "/no/such/page", timeout=30)
    assert missing.status_code == 404 and missing.headers["Server"] == "wendelin"
    with socket.create_connection(("127.0.0.1", site.server.http_port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")  # aiohttp answers this itself
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.0 400") and b"\r\nServer: wendelin\r\n" in answer, answer


# -- 11. file modes ---------------------------------------------------------------------------


def private(path: str) -> bool:
    return stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0


def test_state_files_are_private_and_old_ones_are_tightened(tmp_path) -> None:
    root = str(tmp_path / "root")
    policy = add_policy(root, "plant", "--tag-pattern", "plant.**")
    assert private(os.path.join(root, "catalog.sqlite"))
    with ServerProcess(root) as server:
        auth = (policy["user"], policy["password"])
        assert post_tag(Site(server, auth), "plant.mode", json={"v": 1}).status_code == 204
    stream = os.path.join(root, "streams", "plant.mode")
    for name in ("data", "index", "meta.json"):
        assert private(os.path.join(stream, name)), name
    os.chmod(os.path.join(root, "catalog.sqlite"), 0o644)  # as a version before this left it
    os.chmod(os.path.join(stream, "meta.json"), 0o644)
    os.chmod(stream, 0o755)
    with ServerProcess(root):
        pass
    assert private(os.path.join(root, "catalog.sqlite"))
    assert private(os.path.join(stream, "meta.json")) and private(stream)


# -- 4. slow clients --------------------------------------------------------------------------


def test_slow_headers_are_cut_off_and_connections_capped(tmp_path) -> None:
    """300 connections sending headers slowly stayed open 120 s (fds 32 -> 332)."""
    options = ("--max-connections", "20", "--header-timeout", "1")
    with ServerProcess(str(tmp_path / "root"), *options) as server:
        idle = server.open_files()
        slow = []
        for _ in range(30):
            connection = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            slow.append(connection)
        time.sleep(0.3)
        assert server.open_files() - idle <= 20 + 2  # the cap, not 30
        closed = set()
        deadline = time.monotonic() + 4
        while len(closed) < len(slow) and time.monotonic() < deadline:
            for number, connection in enumerate(slow):
                if number in closed:
                    continue
                try:
                    connection.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    closed.add(number)
            time.sleep(0.3)
        assert len(closed) == len(slow), f"{len(slow) - len(closed)} still open after 4 s"
        assert requests.get(server.url + "/healthz", timeout=5).ok
        assert "no complete request head within 1.0 s" in server.log()
        for connection in slow:
            connection.close()
