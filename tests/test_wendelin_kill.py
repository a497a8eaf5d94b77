"""Kill -9 the service several times while 100,000 chunks are sent with retries.

Senders behave like fluentd's out_forward with require_ack_response (and, for HTTP, like
out_http): a chunk is resent with the same id or the same bytes until it is acknowledged.
After the run the stream must hold every chunk exactly once, contain no torn entry, and have
reopened after each kill without any manual repair.
"""

import random
import threading
import time

import msgpack
import pytest
import requests

from kiln.testing.forward_client import ForwardClient
from kiln.testing.wendelin import ServerProcess, add_policy, cli
from kiln.wendelin import eventtime

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

FORWARD_CHUNKS = 100_000
FORWARD_SENDERS = 4
HTTP_CHUNKS = 1_500
WINDOW = 2_000  # unacknowledged chunks in flight per connection
KILLS_AT = (0.1, 0.3, 0.5, 0.7, 0.85)  # fractions of acknowledged chunks at which to kill -9


def forward_chunk(number: int) -> bytes:
    return msgpack.packb([eventtime.pack(1_700_000_000 + number), {"i": number}])


class ForwardSender(threading.Thread):
    """Sends its share of chunk ids, resending every unacknowledged one after a failure."""

    def __init__(self, port: int, shared_key: str, numbers: range, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port, self.shared_key, self.numbers, self.deadline = (
            port,
            shared_key,
            numbers,
            deadline,
        )
        self.acked: set[str] = set()
        self.reconnects = 0
        self.error: BaseException | None = None

    def connect(self) -> ForwardClient:
        while True:
            try:
                return ForwardClient("127.0.0.1", self.port, self.shared_key, timeout=20)
            except (OSError, EOFError):
                if time.monotonic() > self.deadline:
                    raise
                time.sleep(0.05)

    def run(self) -> None:
        try:
            self.send_all()
        except BaseException as error:  # reported by the test
            self.error = error

    def send_all(self) -> None:
        pending = iter(self.numbers)
        unacked: dict[str, int] = {}
        client = self.connect()
        resend = []
        while True:
            try:
                for chunk_id in resend:
                    client.send_packed(
                        "kill.test", forward_chunk(unacked[chunk_id]), chunk=chunk_id
                    )
                resend = []
                while len(unacked) < WINDOW:
                    number = next(pending, None)
                    if number is None:
                        break
                    chunk_id = f"chunk-{number}\n"
                    unacked[chunk_id] = number
                    client.send_packed("kill.test", forward_chunk(number), chunk=chunk_id)
                if not unacked:
                    client.close()
                    return
                acked = client.read_ack()
                unacked.pop(acked)  # type: ignore[arg-type]
                self.acked.add(acked)  # type: ignore[arg-type]
            except (OSError, EOFError):
                client.close()
                if time.monotonic() > self.deadline:
                    raise
                self.reconnects += 1
                client = self.connect()
                resend = list(unacked)


class HttpSender(threading.Thread):
    """fluentd's out_http: POST each chunk until a 2xx, retrying 503 and connection errors."""

    def __init__(self, url: str, auth: tuple[str, str], count: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.url, self.auth, self.count, self.deadline = url, auth, count, deadline
        self.retries = 0
        self.error: BaseException | None = None
        self.acked = 0

    def run(self) -> None:
        try:
            session = requests.Session()
            for number in range(self.count):
                body = msgpack.packb([eventtime.pack(1_700_000_000 + number), {"h": number}])
                while True:
                    try:
                        response = session.post(self.url, data=body, auth=self.auth, timeout=20)
                        if response.status_code == 204:
                            break
                        assert response.status_code == 503, response.text
                    except requests.ConnectionError:
                        session = requests.Session()
                    if time.monotonic() > self.deadline:
                        raise TimeoutError("HTTP sender gave up")
                    self.retries += 1
                    time.sleep(0.02)
                self.acked += 1
        except BaseException as error:
            self.error = error


def stored_entries(server: ServerProcess, auth: tuple[str, str], stream: str) -> list[dict]:
    response = requests.get(f"{server.url}/api/streams/{stream}/data", auth=auth, timeout=60)
    response.raise_for_status()
    # Unpacking the whole stream also proves no torn entry is visible: it must end cleanly.
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(response.content)
    records = [record for _, record in unpacker]
    assert unpacker.tell() == len(response.content)
    return records


def test_kill_minus_nine_during_100000_chunks_loses_and_duplicates_nothing(tmp_path) -> None:
    root = str(tmp_path / "root")
    credentials = add_policy(root, "kill", "--tag-pattern", "kill.**")
    auth = (credentials["user"], credentials["password"])
    server = ServerProcess(root).start()
    deadline = time.monotonic() + 300
    share = FORWARD_CHUNKS // FORWARD_SENDERS
    senders = [
        ForwardSender(
            server.forward_port,
            credentials["shared_key"],
            range(k * share, (k + 1) * share),
            deadline,
        )
        for k in range(FORWARD_SENDERS)
    ]
    http = HttpSender(
        f"{server.url}/ingestion_policies/kill/ingest?reference=kill.http",
        auth,
        HTTP_CHUNKS,
        deadline,
    )
    for thread in [*senders, http]:
        thread.start()
    chooser = random.Random()
    kills = 0
    try:
        for fraction in KILLS_AT:
            while sum(len(s.acked) for s in senders) < fraction * FORWARD_CHUNKS:
                assert time.monotonic() < deadline, "senders stalled"
                assert all(s.is_alive() or s.error is None for s in senders)
                time.sleep(0.005)
            time.sleep(chooser.uniform(0, 0.05))  # kill at an arbitrary instant after that
            server.kill()
            kills += 1
            time.sleep(chooser.uniform(0, 0.3))
            server.start()
        for thread in [*senders, http]:
            thread.join(max(deadline - time.monotonic(), 1))
    finally:
        records = None
        if server.process and server.process.poll() is None:
            records = stored_entries(server, auth, "kill.test")
            http_records = stored_entries(server, auth, "kill.http")
        server.stop()
    for thread in [*senders, http]:
        assert thread.error is None, repr(thread.error)
        assert not thread.is_alive()
    assert kills == len(KILLS_AT)
    assert sum(s.reconnects for s in senders) >= kills  # the kills really cut connections
    assert records is not None
    numbers = [record["i"] for record in records]
    assert len(numbers) == FORWARD_CHUNKS, f"{len(numbers) - len(set(numbers))} duplicates"
    assert sorted(numbers) == list(range(FORWARD_CHUNKS))
    assert sorted(record["h"] for record in http_records) == list(range(HTTP_CHUNKS))
    # The catalog, synced on shutdown, agrees with the stream.
    listing = cli("stream", "list", "--root", root)
    assert "kill.test\tpolicy=kill\tkind=entries\tsize=" in listing
    assert f"entries={FORWARD_CHUNKS}\t" in listing
