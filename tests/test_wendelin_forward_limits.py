"""What a forward client without credentials can hold: memory, time, connections, CPU.

Each test runs a real `kiln wendelin serve` and talks to it over real sockets.
"""

import gzip
import resource
import socket
import struct
import threading
import time
from collections.abc import Iterator

import msgpack
import pytest

from kiln.testing.forward_client import ForwardClient, new_chunk_id, pack_packed_forward
from kiln.testing.wendelin import HealthProbe, ServerProcess, add_policy
from kiln.wendelin import eventtime

pytestmark = pytest.mark.integration


@pytest.fixture
def forward_server(tmp_path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """No anonymous-forward policy: every forward client must hand-shake first."""
    root = str(tmp_path / "root")
    policy = add_policy(root, "plant", "--tag-pattern", "plant.**")
    server = ServerProcess(
        root, "--handshake-timeout", "2", "--max-forward-connections", "20"
    ).start()
    yield server, policy
    server.stop()


def connect(server: ServerProcess) -> socket.socket:
    """A raw connection, its HELO read."""
    connection = socket.create_connection(("127.0.0.1", server.forward_port), timeout=10)
    unpacker = msgpack.Unpacker()
    while True:
        unpacker.feed(connection.recv(4096))
        for _ in unpacker:
            return connection


def closed_by_server(connection: socket.socket, within: float) -> bool:
    """Whether the server closes ``connection`` within ``within`` seconds."""
    connection.settimeout(within)
    try:
        while connection.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:  # reset: closed too
        pass
    return True


def send_until_closed(connection: socket.socket, data: bytes) -> None:
    try:
        for start in range(0, len(data), 1 << 16):
            connection.sendall(data[start : start + (1 << 16)])
    except OSError:  # the server closed it: what we want
        pass


def wait_for_log(server: ServerProcess, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the server log: {server.log()}")


def test_unauthenticated_connections_cannot_hold_memory(forward_server) -> None:
    """Ten connections each start a 59 MiB message before any PING: the server used to
    buffer up to 64 MiB per connection (+611 MB RSS for ten); now it stops reading at the
    pre-handshake limit (64 KiB) and closes them."""
    server, _ = forward_server
    before = server.rss()
    header = b"\xdb" + struct.pack(">I", 59 << 20)  # str32 of 59 MiB
    connections = [connect(server) for _ in range(10)]
    for connection in connections:
        send_until_closed(connection, header + b"a" * (4 << 20))
    time.sleep(0.5)
    grown = server.rss() - before
    assert grown < 16 << 20, f"RSS grew by {grown >> 20} MiB"
    assert all(closed_by_server(connection, 2) for connection in connections)
    assert "bytes before the handshake" in wait_for_log(server, "bytes before the handshake")
    for connection in connections:
        connection.close()


def test_a_large_structure_before_the_handshake_is_refused_at_once(forward_server) -> None:
    """An array announcing millions of empty maps (a 16 MiB list took 1.2 GB and froze the
    loop for 3.9 s) is refused from its header."""
    server, _ = forward_server
    connection = connect(server)
    send_until_closed(connection, b"\xdd" + struct.pack(">I", 16 << 20) + b"\x80" * 4096)
    assert closed_by_server(connection, 2)
    wait_for_log(server, "exceeds max_array_len")
    connection.close()


def test_the_handshake_deadline_is_not_extended_by_reads(forward_server) -> None:
    """A byte every 0.3 s used to restart the handshake timeout for ever."""
    server, _ = forward_server
    connection = connect(server)
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < 6:
        try:
            # A PING array whose first string never ends: one byte at a time.
            first = time.monotonic() - started < 0.1
            connection.sendall(b"\x96\xda\xff\xff" if first else b"a")
        except OSError:
            closed = True
            break
        if closed_by_server(connection, 0.3):
            closed = True
            break
    assert closed, "still open after 6 s of trickling"
    assert time.monotonic() - started < 4  # the 2 s deadline, and some slack
    wait_for_log(server, "no handshake within 2.0 s")
    connection.close()


def test_a_ping_with_a_non_ascii_digest_closes_with_a_log_line(forward_server) -> None:
    server, _ = forward_server
    connection = connect(server)
    ping = ["PING", "host", b"salt", "é" * 64, "", ""]
    connection.sendall(msgpack.packb(ping, use_bin_type=True))
    assert closed_by_server(connection, 2)
    log = wait_for_log(server, "digest must be hexadecimal")
    assert "Traceback" not in log
    connection.close()


def test_connections_past_the_cap_are_closed(forward_server) -> None:
    server, _ = forward_server
    held = [connect(server) for _ in range(20)]
    extra = socket.create_connection(("127.0.0.1", server.forward_port), timeout=5)
    assert closed_by_server(extra, 2)
    wait_for_log(server, "connections open, the limit")
    for connection in [*held, extra]:
        connection.close()


def gzip_members(count: int) -> bytes:
    entry = msgpack.packb([eventtime.pack(1_700_000_000.0), {"v": 1}])
    return b"".join(gzip.compress(entry, mtime=0) for _ in range(count))


@pytest.mark.slow
def test_health_checks_answer_during_a_compressed_member_flood(forward_server) -> None:
    """Messages of 10,000 gzip members (30 ms of CPU each) from four connections, sent
    back to back: decompressed in a worker, the event loop keeps answering. On the event
    loop (before): slowest /healthz 0.26 s, 29 answers in 4 s; in the pool: 0.06 s, 141."""
    server, policy = forward_server
    blob = gzip_members(10_000)
    stop = threading.Event()
    errors: list[BaseException] = []

    def flood() -> None:
        try:
            with ForwardClient("127.0.0.1", server.forward_port, policy["shared_key"]) as client:
                while not stop.is_set():
                    chunks = [new_chunk_id() for _ in range(8)]
                    for chunk in chunks:  # eight in flight, as fluentd's flush threads do
                        client.write_raw(_packed("plant.flood", blob, chunk))
                    for _ in chunks:
                        client.read_ack()
        except (OSError, EOFError) as error:  # closed when the pool is full: allowed
            errors.append(error)

    with HealthProbe(server.url) as probe:
        threads = [threading.Thread(target=flood) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(4)
        stop.set()
        for thread in threads:
            thread.join(60)
    assert probe.slowest < 0.15, f"/healthz took {probe.slowest:.2f} s"
    assert probe.answers > 60, f"only {probe.answers} health checks answered in 4 s"


def _packed(tag: str, blob: bytes, chunk: str) -> bytes:
    return pack_packed_forward(tag, blob, {"compressed": "gzip", "chunk": chunk})


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip("the hard open files limit is too low to see it raised")
    with ServerProcess(str(tmp_path / "root"), open_files_soft_limit=256) as server:
        assert server.process is not None
        with open(f"/proc/{server.process.pid}/limits") as limits:
            line = next(line for line in limits if line.startswith("Max open files"))
        soft, hard_seen = line.split()[3:5]
        assert soft == hard_seen == str(hard), line
