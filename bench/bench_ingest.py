"""Ingest benchmark: forward protocol events/s and HTTP MB/s, against an fsync baseline.

Starts a real `wendelin serve` on 127.0.0.1 with a fresh root, sends:

* forward protocol, PackedForward with require_ack_response-style acks: 1,000,000 records of
  about 100 bytes, in chunks of 10,000 records, over 1 and over 4 connections;
* HTTP ingest (fluent-plugin-wendelin protocol): 1 MiB chunks, one connection;

and compares each with a baseline measured in the same run: the same bytes written and
fsynced to a plain file in the same directory, one fsync per chunk (the batching a sender
that waits for each acknowledgement gets at worst). Baseline and service runs alternate over
a few rounds and the table shows medians, because other work on the machine moves both.

    python bench/bench_ingest.py [--workdir DIR] [--records N] [--http-mib N]

Not part of the test suite. Numbers are noisy on a shared 2-core machine.
"""

import argparse
import base64
import http.client
import os
import shutil
import tempfile
import threading
import time
from statistics import median

import msgpack

from wendelin import eventtime
from wendelin.forward_client import ForwardClient, pack_packed_forward
from wendelin.testing import ServerProcess, add_policy

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


def fsync_baseline(directory: str, blobs: list[bytes]) -> float:
    """Seconds to append ``blobs`` to a plain file with one fsync per blob."""
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


def forward_run(
    server: ServerProcess, key: str, blobs: list[bytes], connections: int, round_number: int
) -> float:
    """Seconds from the first byte sent to the last ack, spread over ``connections``.

    Chunk ids are new in every round: a reused id would be acknowledged as a duplicate.
    """
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
    errors: list[BaseException] = []

    def send(client: ForwardClient, queue: list[tuple[str, bytes]]) -> None:
        try:
            in_flight = 0
            for _, message in queue:
                if in_flight == WINDOW:
                    client.read_ack()
                    in_flight -= 1
                client.write_raw(message)
                in_flight += 1
            for _ in range(in_flight):
                client.read_ack()
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=send, args=(client, queue))
        for client, queue in zip(clients, messages, strict=True)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    if errors:
        raise errors[0]
    return elapsed


def http_run(server: ServerProcess, auth: tuple[str, str], blobs: list[bytes]) -> float:
    """One keep-alive connection posting chunk after chunk, as one fluentd flush thread.

    http.client rather than requests: the client's own overhead should not be measured.
    """
    path = "/ingestion_policies/bench/ingest?reference=bench.http"
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/octet-stream"}
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port)
    started = time.perf_counter()
    for blob in blobs:
        connection.request("POST", path, body=blob, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 204:
            raise RuntimeError(f"HTTP ingest answered {response.status}: {answer!r}")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


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
    return f"| {name:<40} | {amount:>12} | {ours:>14,.0f} | {base:>14,.0f} | {ratio:>6.0%} | {unit}"


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
            f"| {'measure':<40} | {'amount':>12} | {'wendelin':>14} | {'fsync baseline':>14} "
            f"| {'ratio':>6} | unit",
            f"|{'-' * 42}|{'-' * 14}|{'-' * 16}|{'-' * 16}|{'-' * 8}|------",
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
            for label, record in (
                ("HTTP, 1 MiB chunks of 100 B entries", make_record(0)),
                ("HTTP, 1 MiB chunks of 64 KiB entries", samples_record()),
            ):
                ours, base = [], []
                for round_number in range(options.rounds):
                    http_blobs = http_chunks(options.http_mib, record, round_number)
                    megabytes = sum(len(blob) for blob in http_blobs) / 1e6
                    base.append(megabytes / fsync_baseline(work, http_blobs))
                    ours.append(megabytes / http_run(server, auth, http_blobs))
                lines.append(row(label, f"{megabytes:,.0f} MB", median(ours), median(base), "MB/s"))
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
