"""Ingest benchmark: forward protocol events/s and HTTP MB/s, against an fsync baseline.

Starts a real `wendelin serve` on 127.0.0.1 with a fresh root, sends:

* forward protocol, PackedForward with require_ack_response-style acks: 1,000,000 records of
  about 100 bytes, in chunks of 10,000 records, over 1 and over 4 connections;
* HTTP ingest (fluent-plugin-wendelin protocol): 1 MiB chunks, over 1 connection (one fluentd
  flush thread) and over 4 (several flush threads or agents on one tag);

and compares each with a baseline measured in the same run: the same bytes written and
fsynced to a plain file in the same directory, with the same commit batching. The service
reports how many commits (fsyncs) its chunks took; the baseline groups the chunks into as many
writes. Baseline and service alternate (HTTP: in slices of each round, each after a pause for
the disk to settle) and the table shows medians of rounds, because other work on the machine
moves both.

One more row puts the HTTP numbers in context: a bare HTTP receiver (asyncio, no checks, no
index, no dedup) that writes and fsyncs each body before answering, i.e. the floor of any
server that acknowledges only durable data, measured against the same baseline.

    python bench/bench_ingest.py [--workdir DIR] [--records N] [--http-mib N]

Not part of the test suite. Numbers are noisy on a shared 2-core machine.
"""

import argparse
import asyncio
import base64
import http.client
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from statistics import median

import msgpack
import requests

from kiln.testing.forward_client import ForwardClient, pack_packed_forward
from kiln.testing.wendelin import ServerProcess, add_policy, free_port
from kiln.wendelin import eventtime

RECORDS_PER_CHUNK = 10_000
WINDOW = 4  # chunks in flight per connection, like fluentd's flush threads


def make_record(number: int) -> bytes:
    record = {
        "host": "turbine-07",
        "sensor": "nacelle.temperature",
        "value": 21.5 + (number % 100) / 100,
        "seq": number,
        "unit": "degC",
        "status": "ok",
    }
    return msgpack.packb([eventtime.pack(1_700_000_000 + number / 1000), record])


def make_chunks(records: int) -> list[bytes]:
    """Entry blobs of RECORDS_PER_CHUNK records each (~100 bytes per record)."""
    blobs = []
    for start in range(0, records, RECORDS_PER_CHUNK):
        stop = min(start + RECORDS_PER_CHUNK, records)
        blobs.append(b"".join(make_record(n) for n in range(start, stop)))
    return blobs


def settle() -> None:
    """Let the disk finish earlier work: measured here, a baseline run right after a service
    run was up to 40% slower than one after a pause, which favoured neither side fairly."""
    os.sync()
    time.sleep(0.3)


def fsync_baseline(directory: str, blobs: list[bytes]) -> float:
    """Seconds to append ``blobs`` to a plain file with one fsync per blob."""
    settle()
    path = os.path.join(directory, "baseline.bin")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    started = time.perf_counter()
    for blob in blobs:
        os.write(descriptor, blob)
        os.fdatasync(descriptor)
    elapsed = time.perf_counter() - started
    os.close(descriptor)
    os.unlink(path)
    return elapsed


def timed_in_threads(work: Callable[..., None], arguments: list[tuple]) -> float:
    """Seconds for ``work(*each)`` to run in one thread per entry of ``arguments``, all at
    once; the first error any of them raised is raised here."""
    errors: list[BaseException] = []

    def run(*each: object) -> None:
        try:
            work(*each)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=each) for each in arguments]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def forward_run(
    server: ServerProcess, key: str, blobs: list[bytes], connections: int, round_number: int
) -> float:
    """Seconds from the first byte sent to the last ack, spread over ``connections``.

    Chunk ids are new in every round: a reused id would be acknowledged as a duplicate.
    """
    settle()
    shares = [blobs[k::connections] for k in range(connections)]
    clients = [ForwardClient("127.0.0.1", server.forward_port, key) for _ in range(connections)]
    messages = [
        [
            (
                f"bench-{round_number}-{connections}-{k}-{n}\n",
                pack_packed_forward(
                    f"bench.forward{connections}",
                    blob,
                    {
                        "size": RECORDS_PER_CHUNK,
                        "chunk": f"bench-{round_number}-{connections}-{k}-{n}\n",
                    },
                ),
            )
            for n, blob in enumerate(share)
        ]
        for k, share in enumerate(shares)
    ]

    def send(client: ForwardClient, queue: list[tuple[str, bytes]]) -> None:
        in_flight = 0
        for _, message in queue:
            if in_flight == WINDOW:
                client.read_ack()
                in_flight -= 1
            client.write_raw(message)
            in_flight += 1
        for _ in range(in_flight):
            client.read_ack()

    try:
        return timed_in_threads(send, list(zip(clients, messages, strict=True)))
    finally:
        for client in clients:
            client.close()


def http_run(url: str, auth: tuple[str, str], blobs: list[bytes], connections: int = 1) -> float:
    """Keep-alive connections posting chunk after chunk, as fluentd flush threads do.

    http.client rather than requests: the client's own overhead should not be measured.
    """
    settle()
    host, port = url.removeprefix("http://").split(":")
    path = "/ingestion_policies/bench/ingest?reference=bench.http"
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/octet-stream"}

    def post(share: list[bytes]) -> None:
        connection = http.client.HTTPConnection(host, int(port))
        try:
            for blob in share:
                connection.request("POST", path, body=blob, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 204:
                    raise RuntimeError(f"HTTP ingest answered {response.status}: {answer!r}")
        finally:
            connection.close()

    return timed_in_threads(post, [(blobs[k::connections],) for k in range(connections)])


def stream_counts(server: ServerProcess, auth: tuple[str, str]) -> tuple[int, int]:
    """(chunks, commits) of the benchmark's HTTP stream so far."""
    answer = requests.get(f"{server.url}/api/streams/bench.http", auth=auth, timeout=10)
    if answer.status_code == 404:  # not created yet
        return 0, 0
    answer.raise_for_status()
    described = answer.json()
    return described["chunks"], described["commits"]


def batched(blobs: list[bytes], writes: int) -> list[bytes]:
    """``blobs`` joined into ``writes`` consecutive groups of (nearly) equal counts."""
    writes = max(1, min(writes, len(blobs)))
    bounds = [round(k * len(blobs) / writes) for k in range(writes + 1)]
    return [b"".join(blobs[bounds[k] : bounds[k + 1]]) for k in range(writes)]


def bare_receiver(port: int, path: str, ready: "multiprocessing.synchronize.Event") -> None:
    """An HTTP/1.1 server doing nothing but write, fsync and answer 204 (the floor).

    Runs in its own process, like the service. Handles Content-Length bodies only, which is
    all the benchmark sends.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    class Receiver(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = bytearray()
            self.needed: int | None = None
            self.busy = False

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            self.next_request()

        def next_request(self) -> None:
            if self.busy:
                return
            if self.needed is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                self.needed = end + 4 + length
                self.body_start = end + 4
            if len(self.buffer) < self.needed:
                return
            body = bytes(self.buffer[self.body_start : self.needed])
            del self.buffer[: self.needed]
            self.needed = None
            self.busy = True
            self.committing = asyncio.ensure_future(self.commit(body))

        async def commit(self, body: bytes) -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, write_durably, body)
            self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")  # type: ignore[attr-defined]
            self.busy = False
            self.next_request()

    def write_durably(body: bytes) -> None:
        os.write(descriptor, body)
        os.fdatasync(descriptor)

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Receiver, "127.0.0.1", port)
        ready.set()
        await server.serve_forever()

    asyncio.run(serve())


def http_chunks(mebibytes: int, record: bytes, round_number: int) -> list[bytes]:
    """About 1 MiB chunks of ``record`` repeated; every chunk of every round differs, so no
    byte-identical resend is recognised (and skipped) as a retry."""
    per_chunk = (1 << 20) // len(record)
    return [
        msgpack.packb([eventtime.pack(1_700_000_000 + n), {"chunk": n, "round": round_number}])
        + record * per_chunk
        for n in range(mebibytes)
    ]


def samples_record() -> bytes:
    """One entry carrying 64 KiB of samples, as a sound or vibration sensor sends."""
    return msgpack.packb([eventtime.pack(1_700_000_000), {"samples": bytes(range(256)) * 256}])


def row(name: str, amount: str, ours: float, base: float, unit: str) -> str:
    ratio = ours / base
    return f"| {name:<44} | {amount:>12} | {ours:>14,.0f} | {base:>14,.0f} | {ratio:>6.0%} | {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="Where the root lives.")
    parser.add_argument("--records", type=int, default=1_000_000, help="Forward records.")
    parser.add_argument("--http-mib", type=int, default=128, help="HTTP MiB per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds per measure.")
    options = parser.parse_args()

    work = tempfile.mkdtemp(prefix="wendelin-bench-", dir=options.workdir)
    try:
        root = os.path.join(work, "root")
        credentials = add_policy(root, "bench", "--tag-pattern", "bench.**")
        auth = (credentials["user"], credentials["password"])
        blobs = make_chunks(options.records)
        record_bytes = sum(len(blob) for blob in blobs) / options.records
        lines = [
            f"records: {options.records:,} of {record_bytes:.0f} bytes in chunks of "
            f"{RECORDS_PER_CHUNK:,}; HTTP: {options.http_mib} x 1 MiB; medians of "
            f"{options.rounds} rounds, baseline and service alternating; workdir {work}",
            "",
            f"| {'measure':<44} | {'amount':>12} | {'wendelin':>14} | {'fsync baseline':>14} "
            f"| {'ratio':>6} | unit",
            f"|{'-' * 46}|{'-' * 14}|{'-' * 16}|{'-' * 16}|{'-' * 8}|------",
        ]
        with ServerProcess(root) as server:
            for connections in (1, 4):
                ours, base = [], []
                for round_number in range(options.rounds):
                    base.append(options.records / fsync_baseline(work, blobs))
                    elapsed = forward_run(
                        server, credentials["shared_key"], blobs, connections, round_number
                    )
                    ours.append(options.records / elapsed)
                label = f"forward PackedForward+ack, {connections} conn"
                amount = f"{options.records:,} ev"
                lines.append(row(label, amount, median(ours), median(base), "events/s"))
            lines.extend(http_rows(server, auth, work, options))
        lines.append(bare_receiver_row(work, options))
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


SLICES = 8  # HTTP rounds alternate service and baseline in this many slices


def alternating(
    blobs: list[bytes], send: Callable[[list[bytes]], tuple[float, int]], work: str
) -> tuple[float, float]:
    """Seconds for the service and for the baseline over the same blobs, slice by slice.

    The disk of a shared machine speeds up and slows down over seconds; alternating in short
    slices, each after a pause for the disk to settle, exposes both sides to the same
    conditions. ``send`` posts a slice and returns its seconds and how many commits (fsyncs) it
    took, which the baseline then uses for the same bytes.
    """
    ours = base = 0.0
    step = max(1, len(blobs) // SLICES)
    for start in range(0, len(blobs), step):
        piece = blobs[start : start + step]
        seconds, commits = send(piece)
        ours += seconds
        base += fsync_baseline(work, batched(piece, commits))
    return ours, base


def http_rows(
    server: ServerProcess, auth: tuple[str, str], work: str, options: argparse.Namespace
) -> list[str]:
    """Rows for HTTP ingest over 1 and 4 connections, each against same-batching baselines."""
    rows = []
    cases = (
        ("HTTP, 1 MiB chunks of 100 B entries, 1 conn", make_record(0), 1),
        ("HTTP, 1 MiB chunks of 64 KiB entries, 1 conn", samples_record(), 1),
        ("HTTP, 1 MiB chunks of 100 B entries, 4 conn", make_record(0), 4),
    )

    for number, (label, record, connections) in enumerate(cases):

        def send(piece: list[bytes], connections: int = connections) -> tuple[float, int]:
            _, commits_before = stream_counts(server, auth)
            seconds = http_run(server.url, auth, piece, connections)
            return seconds, stream_counts(server, auth)[1] - commits_before

        ours, base = [], []
        for round_number in range(options.rounds):
            blobs = http_chunks(options.http_mib, record, 10 * number + round_number)
            megabytes = sum(len(blob) for blob in blobs) / 1e6
            seconds, base_seconds = alternating(blobs, send, work)
            ours.append(megabytes / seconds)
            base.append(megabytes / base_seconds)
        rows.append(row(label, f"{megabytes:,.0f} MB", median(ours), median(base), "MB/s"))
    return rows


def bare_receiver_row(work: str, options: argparse.Namespace) -> str:
    """The floor: a receiver that only writes and fsyncs, against the same baseline."""
    port = free_port()
    ready = multiprocessing.Event()
    receiver = multiprocessing.Process(
        target=bare_receiver, args=(port, os.path.join(work, "bare.bin"), ready), daemon=True
    )
    receiver.start()

    def send(piece: list[bytes]) -> tuple[float, int]:
        seconds = http_run(f"http://127.0.0.1:{port}", ("-", "-"), piece)
        return seconds, len(piece)  # one fsync per body

    try:
        if not ready.wait(30):
            raise RuntimeError("the bare receiver did not start")
        ours, base = [], []
        for round_number in range(options.rounds):
            blobs = http_chunks(options.http_mib, make_record(0), 100 + round_number)
            megabytes = sum(len(blob) for blob in blobs) / 1e6
            seconds, base_seconds = alternating(blobs, send, work)
            ours.append(megabytes / seconds)
            base.append(megabytes / base_seconds)
    finally:
        receiver.terminate()
        receiver.join()
    label = "floor: bare HTTP receiver + fsync, 1 conn"
    return row(label, f"{megabytes:,.0f} MB", median(ours), median(base), "MB/s")


if __name__ == "__main__":
    main()
