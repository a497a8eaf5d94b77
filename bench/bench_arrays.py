"""Data arrays benchmark: out-of-core FFT, slice reads and plot windows, against numpy baselines.

One run, one table, each row beside a baseline measured in the same run:

* **Out-of-core FFT.** Raw int16 PCM bytes (a mono signal) are written into a real raw stream
  through the service's storage (``StreamStore``), at least 4x the memory cap given to the
  worker process. A child process then reads the stream in ranges (``StreamReader.read``),
  computes a Hann-windowed FFT of every frame with Dask (threads) and appends the magnitude
  spectrum to a data array, block by block; its peak RSS (``getrusage``) must stay under the
  cap. Baseline: ``numpy.memmap`` over the stream's own data file, ``numpy.fft`` over the same
  frames in the same blocks, the spectrum written to a ``numpy.memmap`` file and flushed.
  Both rates are input bytes per second.
* **Slice reads.** Random slices of a 100-million-point array (``DataArray[a:b]``), beside the
  same slices of a ``numpy.memmap`` over the same values in one flat file, both copied out and
  both from the page cache (warmed first).
* **Window endpoint.** p50/p99 latency of ``GET /api/arrays/<name>/window`` (1,000 buckets,
  random zooms from the whole array to 1,000 rows) against a real ``kiln wendelin serve``.

Targets: RSS under the cap; FFT and slice reads >= 50% of numpy.memmap; window p99 < 50 ms.

    python bench/bench_arrays.py [--workdir DIR] [--cap-mib 256] [--points 100000000]

Not part of the test suite. Numbers are noisy on a shared 2-core machine.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from statistics import median

import numpy as np
import requests

from kiln.testing.wendelin import ServerProcess, cli

FRAME = 1024  # samples per FFT frame
BLOCK_FRAMES = 2048  # frames per block read from the stream (4 MiB of int16)
BLOCK_BYTES = FRAME * BLOCK_FRAMES * 2
BINS = FRAME // 2 + 1
SLICE_ROWS = 4 << 20  # rows of each slice read
SLICES = 40
WINDOW_REQUESTS = 400


def write_stream(root: str, size: int) -> str:
    """A raw stream of ``size`` bytes of int16 PCM through the service's storage; its data
    file (the same bytes, for the memmap baseline)."""
    from kiln.wendelin.stream_reader import RAW
    from kiln.wendelin.streams import StreamStore

    async def write() -> None:
        store = StreamStore(root)
        writer = store.open_or_create("pcm", "audio", RAW)
        rng = np.random.default_rng(1)
        tone = (np.sin(np.arange(BLOCK_BYTES // 2) * 0.05) * 8000).astype("<i2")

        async def pieces():
            for _ in range(size // BLOCK_BYTES):
                noise = rng.integers(-2000, 2000, BLOCK_BYTES // 2, dtype="<i2")
                yield (tone + noise).tobytes()

        await writer.append_raw(pieces())
        await store.close()

    asyncio.run(write())
    data = os.path.join(root, "streams", "pcm", "data")  # the stream's bytes, as stored
    assert os.path.getsize(data) == size, (data, os.path.getsize(data))
    return data


# The child processes: each prints one JSON line (seconds, peak RSS).
KILN_FFT = """
import json, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
import dask, dask.array as da, numpy as np
from kiln.wendelin.arrays import ArrayStore, Provenance
from kiln.wendelin.streams import StreamStore
root, FRAME, BLOCK_BYTES, BINS = sys.argv[1], *map(int, sys.argv[2:5])
dask.config.set(scheduler="threads", num_workers=2)
started = time.perf_counter()
stream = StreamStore(root).get("pcm")
size = stream.stats.size
hann = np.hanning(FRAME).astype(np.float32)

def block(number):
    return np.frombuffer(stream.read(number * BLOCK_BYTES, BLOCK_BYTES), "<i2")

def spectrum(samples):
    frames = samples.reshape(-1, FRAME)
    out = np.empty((len(frames), BINS), np.float32)
    for first in range(0, len(frames), 256):  # a few MB of temporaries at a time
        part = frames[first:first + 256].astype(np.float32) * hann
        out[first:first + 256] = np.abs(np.fft.rfft(part, axis=1))
    return out

blocks = size // BLOCK_BYTES
samples = da.concatenate([
    da.from_delayed(dask.delayed(block)(n), (BLOCK_BYTES // 2,), "<i2") for n in range(blocks)
])
frames = BLOCK_BYTES // 2 // FRAME
spectra = samples.map_blocks(spectrum, chunks=((frames,) * blocks, (BINS,)), new_axis=1,
                             dtype=np.float32)
out = ArrayStore(root + "/arrays").create(
    "spectrum", np.float32, inner_shape=(BINS,), chunk_rows=frames,
    source=Provenance("pcm", 0, 0))
# Dask computes the next blocks while the previous ones are appended (in order).
batch, writing = 2, None
with ThreadPoolExecutor(1) as writer:
    def append(first, done):
        for offset, rows in enumerate(done):
            out.append(rows, consumed=(first + offset + 1) * BLOCK_BYTES)
    for first in range(0, blocks, batch):
        done = dask.compute(*[spectra.blocks[n] for n in range(first, min(first + batch, blocks))])
        if writing is not None:
            writing.result()
        writing = writer.submit(append, first, done)
    writing.result()
seconds = time.perf_counter() - started
assert out.shape == (blocks * frames, BINS) and out.consumed == size
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak": peak, "bytes": size}))
"""

MEMMAP_FFT = """
import json, os, resource, sys, time
import numpy as np
data, out_path, FRAME, BLOCK_BYTES, BINS = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
started = time.perf_counter()
samples = np.memmap(data, dtype="<i2", mode="r")
hann = np.hanning(FRAME).astype(np.float32)
step = BLOCK_BYTES // 2
out = np.memmap(out_path, dtype=np.float32, mode="w+", shape=(len(samples) // FRAME, BINS))
for first in range(0, len(samples), step):
    frames = samples[first:first + step].reshape(-1, FRAME).astype(np.float32) * hann
    out[first // FRAME:(first + step) // FRAME] = np.abs(np.fft.rfft(frames, axis=1))
out.flush()  # written back, as the array's chunks are
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak": peak, "bytes": len(samples) * 2}))
"""


def run_child(script: str, *arguments: object) -> dict:
    """What a child process reports: seconds, bytes and its peak RSS (its own getrusage; the
    caller compares it with the cap: an RLIMIT_AS would count the threads' reserved arenas
    and mapped files, not memory used)."""
    output = subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def warm_cache(path: str) -> None:
    """Read a file once, so that both sides read it from the page cache."""
    with open(path, "rb") as stream:
        while stream.read(16 << 20):
            pass


def fft_rows(root: str, cap: int, size: int) -> list[tuple]:
    data = write_stream(root, size)
    warm_cache(data)
    baseline_out = os.path.join(root, "baseline-spectrum.f32")
    rows = []
    base = run_child(MEMMAP_FFT, data, baseline_out, FRAME, BLOCK_BYTES, BINS)
    os.unlink(baseline_out)
    kiln = run_child(KILN_FFT, root, FRAME, BLOCK_BYTES, BINS)
    mb = size / 1e6
    rows.append(
        (
            f"out-of-core FFT, {size >> 20} MiB stream (cap {cap >> 20} MiB)",
            f"{mb / kiln['seconds']:.0f} MB/s",
            f"{mb / base['seconds']:.0f} MB/s",
            kiln["seconds"] and base["seconds"] / kiln["seconds"],
            ">= 50%",
        )
    )
    rows.append(
        (
            "  peak RSS of the FFT process",
            f"{kiln['peak'] / 2**20:.0f} MiB",
            f"{base['peak'] / 2**20:.0f} MiB",
            None,
            f"< {cap >> 20} MiB: {'yes' if kiln['peak'] < cap else 'NO'}",
        )
    )
    return rows


def make_points(root: str, points: int) -> tuple[str, str]:
    """A 1-D float32 array of ``points`` values (appended in pieces, pyramid kept) and the
    same values in one flat file."""
    from kiln.wendelin.arrays import ArrayStore

    array = ArrayStore(os.path.join(root, "arrays")).create("signal", "<f4")
    flat = os.path.join(root, "signal.f32")
    rng = np.random.default_rng(2)
    piece = 1 << 22
    with open(flat, "wb") as out:
        for first in range(0, points, piece):
            count = min(piece, points - first)
            values = np.sin(np.arange(first, first + count) * 1e-5) + rng.random(count) * 0.1
            values = values.astype("<f4")
            array.append(values)
            out.write(values.tobytes())
    return "signal", flat


def slice_rows(root: str, flat: str, points: int) -> list[tuple]:
    from kiln.wendelin.arrays import ArrayStore

    array = ArrayStore(os.path.join(root, "arrays")).open("signal")
    mapped = np.memmap(flat, dtype="<f4", mode="r")
    rng = np.random.default_rng(3)
    starts = rng.integers(0, points - SLICE_ROWS, SLICES)
    array[:]  # warm the page cache for both, once
    np.array(mapped)
    rounds = {"kiln": [], "memmap": []}
    for _ in range(3):  # alternate, medians: other work on the machine moves both
        started = time.perf_counter()
        for start in starts:
            kiln_values = array[start : start + SLICE_ROWS]
        rounds["kiln"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for start in starts:
            base_values = np.array(mapped[start : start + SLICE_ROWS])
        rounds["memmap"].append(time.perf_counter() - started)
    assert np.array_equal(kiln_values, base_values)
    total = SLICES * SLICE_ROWS * 4 / 1e6
    kiln, base = median(rounds["kiln"]), median(rounds["memmap"])
    return [
        (
            f"slice reads, {SLICES} x {SLICE_ROWS * 4 >> 20} MiB, {points // 1_000_000}M points",
            f"{total / kiln:.0f} MB/s",
            f"{total / base:.0f} MB/s",
            base / kiln,
            ">= 50%",
        )
    ]


def window_rows(root: str, points: int) -> list[tuple]:
    reader = re.search(r"password:\s+(\S+)", cli("reader", "add", "--root", root, "bench"))
    auth = ("bench", reader.group(1))
    rng = np.random.default_rng(4)
    latencies = []
    with ServerProcess(root) as server, requests.Session() as session:
        url = f"{server.url}/api/arrays/signal/window"
        for number in range(WINDOW_REQUESTS + 20):
            span = int(points / 10 ** rng.uniform(0, np.log10(points / 1000)))
            start = int(rng.integers(0, points - span + 1))
            params = {"start": start, "stop": start + span, "buckets": 1000}
            if number % 10 == 0:
                params = {"buckets": 1000}  # the whole array
            started = time.perf_counter()
            answer = session.get(url, params=params, auth=auth)
            elapsed = time.perf_counter() - started
            assert answer.status_code == 200, answer.text
            assert 500 <= len(answer.json()["min"]) <= 1000 or span < 2000
            if number >= 20:  # the first requests warm the server up
                latencies.append(elapsed)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return [
        (
            f"window endpoint over HTTP, {points // 1_000_000}M points, 1,000 buckets",
            f"p50 {p50:.1f} ms",
            f"p99 {p99:.1f} ms",
            None,
            f"p99 < 50 ms: {'yes' if p99 < 50 else 'NO'}",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="where to put the data (default: a temporary dir)")
    parser.add_argument("--cap-mib", type=int, default=256, help="memory cap of the FFT process")
    parser.add_argument("--points", type=int, default=100_000_000, help="points of the array")
    options = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-arrays-", dir=options.workdir)
    cap = options.cap_mib << 20
    size = (4 * cap // BLOCK_BYTES + 1) * BLOCK_BYTES  # more than 4x the cap
    try:
        root = os.path.join(workdir, "wendelin")
        rows = fft_rows(root, cap, size)
        _, flat = make_points(root, options.points)
        rows += slice_rows(root, flat, options.points)
        rows += window_rows(root, options.points)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'measure':<62} {'kiln':>14} {'baseline':>14} {'ratio':>7}  target")
    for label, ours, theirs, ratio, target in rows:
        shown = "" if ratio is None else f"{ratio:.0%}"
        print(f"{label:<62} {ours:>14} {theirs:>14} {shown:>7}  {target}")


if __name__ == "__main__":
    main()
