"""`kiln cache serve` under floods: bad passwords, slow clients, too many connections, big
ShaDir reads.  Each test checks that a well-behaved client is still served quickly meanwhile.

Every flood is bounded (a few hundred requests or sockets, on 127.0.0.1) and stops by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests

from kiln.shacache.storage import DiskDirStore
from kiln.testing.cache import RunningCache, start_cache_server

pytestmark = pytest.mark.integration

# What "still fast" means on a loaded two-core machine (it is ~5 ms when idle).
FAST = 1.0


def address(server: RunningCache) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def timed_get(url: str) -> tuple[float, requests.Response]:
    start = time.perf_counter()
    response = requests.get(url, timeout=60)
    return time.perf_counter() - start, response


class Flood(threading.Thread):
    """``count`` concurrent requests from one asyncio loop in a thread; their statuses."""

    def __init__(self, count: int, method: str, url: str, **kwargs: object) -> None:
        super().__init__(daemon=True)
        self.count, self.method, self.url, self.kwargs = count, method, url, kwargs
        self.statuses: Counter[int] = Counter()
        self.retry_after: set[str] = set()

    def run(self) -> None:
        asyncio.run(self._flood())

    async def _flood(self) -> None:
        timeout = aiohttp.ClientTimeout(total=120)
        connector = aiohttp.TCPConnector(limit=self.count)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one() -> None:
                async with session.request(self.method, self.url, **self.kwargs) as response:
                    await response.read()
                    self.statuses[response.status] += 1
                    if "Retry-After" in response.headers:
                        self.retry_after.add(response.headers["Retry-After"])

            await asyncio.gather(*(one() for _ in range(self.count)))


def test_wrong_passwords_do_not_slow_down_downloads_or_health(server: RunningCache) -> None:
    blob = os.urandom(10_000)
    digest = requests.post(f"{server.url}/shacache", data=blob, auth=server.auth).text
    flood = Flood(
        200,
        "POST",
        f"{server.url}/shacache",
        data=b"x",
        headers={"Authorization": aiohttp.encode_basic_auth("uploader", "no")},
    )
    flood.start()
    time.sleep(0.5)  # every request of the flood is in by now
    get_seconds, got = timed_get(f"{server.url}/shacache/{digest}")
    health_seconds, health = timed_get(f"{server.url}/health")
    flood.join(120)
    assert got.content == blob and health.status_code == 200
    assert get_seconds < FAST and health_seconds < FAST, (get_seconds, health_seconds)
    # Past the pool's queue, bad passwords are turned away at once, never with a 500.
    assert set(flood.statuses) <= {401, 503} and flood.statuses[503] > 0, flood.statuses
    assert flood.retry_after == {"1"}
    assert "password-check pool is busy" in server.log()


def trickle(sock: socket.socket, stop: threading.Event) -> None:
    """Send a request head one byte at a time, never finishing it (slowloris)."""
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        while not stop.wait(0.2):
            sock.sendall(b"X")
    except OSError:
        pass  # closed by the server: what the test waits for


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (whatever it sends first)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def test_slow_request_heads_are_cut_off_at_the_deadline(tmp_path: Path) -> None:
    server = start_cache_server(tmp_path / "cache", "--header-timeout", "1.5")
    stop = threading.Event()
    sockets = [socket.create_connection(address(server)) for _ in range(30)]
    threads = [threading.Thread(target=trickle, args=(s, stop), daemon=True) for s in sockets]
    try:
        started = time.monotonic()
        for thread in threads:
            thread.start()
        # Normal clients are served while the slow ones trickle.
        seconds, health = timed_get(f"{server.url}/health")
        assert health.status_code == 200 and seconds < FAST
        assert all(closed_within(s, 6) for s in sockets)
        assert time.monotonic() - started < 6
        seconds, health = timed_get(f"{server.url}/health")
        assert health.status_code == 200 and seconds < FAST
    finally:
        stop.set()
        for s in sockets:
            s.close()
        server.stop()


def test_connections_over_the_cap_get_503_and_are_closed(tmp_path: Path) -> None:
    server = start_cache_server(
        tmp_path / "cache", "--max-connections", "8", "--header-timeout", "30"
    )
    idle: list[socket.socket] = []
    try:
        idle = [socket.create_connection(address(server)) for _ in range(8)]
        time.sleep(0.3)  # accepted by now
        extra = socket.create_connection(address(server))
        extra.settimeout(5)
        answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer, answer
        assert closed_within(extra, 5)
        extra.close()
        # The cap holds for every client: requests reads the 503, or a connection closed
        # under it when the 503 raced its request.
        try:
            status: int | None = requests.get(f"{server.url}/health", timeout=5).status_code
        except requests.ConnectionError:
            status = None
        assert status in (503, None)
        deadline = time.monotonic() + 5
        while "refused" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "8 connections open, the cap: refused a new connection" in server.log()
        for s in idle:
            s.close()
        time.sleep(0.3)
        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    finally:
        for s in idle:
            s.close()
        server.stop()


def write_many_entries(root: Path, key: str, count: int) -> None:
    """A key with ``count`` entries, written straight to the store (as years of builds would)."""
    store = DiskDirStore(root)
    entries = [
        [
            json.dumps({"sha512": hashlib.sha512(b"%d" % i).hexdigest(), "n": i}),
            f"alice:{'A' * 86}==",
        ]
        for i in range(count)
    ]
    path = store.path_for(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "entries": entries}))


@pytest.mark.slow
def test_big_shadir_reads_do_not_stall_health(server: RunningCache) -> None:
    write_many_entries(server.root, "pypi:big=1", 100_000)
    flood = Flood(5, "GET", f"{server.url}/shadir/pypi:big=1")
    flood.start()
    worst = 0.0
    while flood.is_alive():
        seconds, health = timed_get(f"{server.url}/health")
        assert health.status_code == 200
        worst = max(worst, seconds)
        time.sleep(0.05)
    flood.join()
    assert set(flood.statuses) <= {200, 503}, flood.statuses
    assert worst < FAST, worst
    listed = requests.get(f"{server.url}/shadir/pypi:big=1").json()
    assert len(listed) == 100_000 and json.loads(listed[7][0])["n"] == 7


def test_full_shadir_pool_answers_503(tmp_path: Path) -> None:
    server = start_cache_server(tmp_path / "cache", "--dir-workers", "1", "--dir-queue", "0")
    try:
        write_many_entries(server.root, "pypi:big=1", 50_000)
        flood = Flood(6, "GET", f"{server.url}/shadir/pypi:big=1")
        flood.start()
        flood.join(120)
        assert flood.statuses[200] >= 1 and flood.statuses[503] >= 1, flood.statuses
        assert set(flood.statuses) == {200, 503} and flood.retry_after == {"1"}
    finally:
        server.stop()
