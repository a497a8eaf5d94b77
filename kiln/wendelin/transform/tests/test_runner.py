"""Transformations in one process, over real streams and arrays on disk (no server)."""

import asyncio
import itertools
from collections.abc import AsyncIterator

import numpy as np
import pytest

from kiln.testing.audio import record_chunk, samples, wav_bytes
from kiln.wendelin import chunks
from kiln.wendelin.arrays.store import ArrayStore
from kiln.wendelin.stream_reader import RAW
from kiln.wendelin.streams import StreamStore
from kiln.wendelin.transform import declarations, spectrum
from kiln.wendelin.transform.model import CAUGHT_UP, FAILED, Declaration
from kiln.wendelin.transform.runner import Runner, TransformSettings

pytestmark = pytest.mark.unit


class Bench:
    """A root with streams, arrays and a runner; ``run`` drives the coroutines."""

    def __init__(self, root: str, batch_bytes: int = 4096) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.streams = StreamStore(root)
        self.arrays = ArrayStore(f"{root}/arrays")
        settings = TransformSettings(batch_bytes=batch_bytes, retry_seconds=3600)
        self.runner = Runner(root, self.streams, self.arrays, settings)

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def upload(self, name: str, data: bytes) -> None:
        writer = self.streams.open_or_create(name, "audio", RAW)

        async def pieces() -> AsyncIterator[bytes]:
            yield data

        self.run(writer.append_raw(pieces()))

    def ingest(self, name: str, blob: bytes) -> None:
        writer = self.streams.open_or_create(name, "monitor")

        async def append() -> None:
            await writer.append(chunks.parse_entries(blob))

        self.run(append())

    def declare(self, *jobs: Declaration, rules: tuple = ()) -> None:
        with declarations.changing(self.root) as declared:
            declared.jobs = list(jobs)
            declared.rules = list(rules)

    def catch_up(self) -> dict:
        self.run(self.runner.catch_up(timeout=60))
        return {status.output: status for status in self.runner.statuses()}

    def close(self) -> None:
        self.run(self.runner.close())
        self.run(self.streams.close())
        self.loop.close()


@pytest.fixture
def bench(tmp_path):
    made = Bench(str(tmp_path))
    yield made
    made.close()


SPECTRUM = {"channel": 1, "window": 64, "hop": 24}


def test_wav_in_pieces_equals_one_computation(bench: Bench) -> None:
    frames = samples(3000, channels=2)
    blob = wav_bytes(frames, rate=8000, streaming=True)
    bench.declare(
        Declaration("mic", "wav-pcm", "mic.pcm"),
        Declaration("mic", "wav-spectrum", "mic.spectrum", SPECTRUM),
    )
    # The header alone first, then pieces that end inside frames (torn last chunks).
    cuts = [0, 30, 44, 1001, 1003, 5555, 9999, len(blob)]
    for start, stop in itertools.pairwise(cuts):
        bench.upload("mic", blob[start:stop])
        statuses = bench.catch_up()
        pcm = bench.arrays.open("mic.pcm") if stop > 44 else None
        if pcm is not None:
            whole = (stop - 44) // 4
            assert pcm.shape == (whole, 2)  # the partial frame is not consumed...
            assert pcm.consumed == 44 + 4 * whole  # ...and stays for the next chunk
    assert statuses["mic.pcm"].state == CAUGHT_UP
    np.testing.assert_array_equal(bench.arrays.open("mic.pcm")[:], frames)
    np.testing.assert_array_equal(bench.arrays.open("mic.spectrum.channel")[:], frames[:, 1])
    expected = spectrum.reference(frames[:, 1], 64, 24, "hann")
    got = bench.arrays.open("mic.spectrum")
    assert got.shape == expected.shape
    assert np.array_equal(got[:], expected)  # exactly: the same rows, not close ones
    assert got.attributes["bin_hz"] == 8000 / 64
    assert got.provenance is not None and got.provenance.stream == "mic"


def test_an_output_ahead_of_the_other_is_neither_repeated_nor_skipped(bench: Bench) -> None:
    """The state a crash between a transformation's two appends leaves: the channel array
    committed further than the spectrum. Here the channel was written first by hand."""
    frames = samples(2000, channels=2)
    blob = wav_bytes(frames)
    bench.upload("mic", blob[:5000])
    bench.declare(Declaration("mic", "wav-channel", "mic.spectrum.channel", {"channel": 1}))
    bench.catch_up()
    ahead = bench.arrays.open("mic.spectrum.channel")
    assert ahead.shape[0] == (5000 - 44) // 4
    bench.upload("mic", blob[5000:])
    bench.declare(Declaration("mic", "wav-spectrum", "mic.spectrum", SPECTRUM))
    bench.catch_up()
    np.testing.assert_array_equal(bench.arrays.open("mic.spectrum.channel")[:], frames[:, 1])
    expected = spectrum.reference(frames[:, 1], 64, 24, "hann")
    assert np.array_equal(bench.arrays.open("mic.spectrum")[:], expected)


def test_a_non_wav_stream_fails_clearly_and_a_fix_is_retried(bench: Bench) -> None:
    bench.upload("photo", b"\x89PNG\r\n\x1a\n" + bytes(100))
    bench.upload("mic", wav_bytes(samples(500, channels=2)))
    bench.declare(
        Declaration("photo", "wav-pcm", "photo.pcm"),
        Declaration("mic", "wav-channel", "mic.left", {"channel": 2}),
    )
    statuses = bench.catch_up()
    assert statuses["photo.pcm"].state == FAILED
    assert "not a WAV stream: it starts with b'\\x89PNG" in statuses["photo.pcm"].message
    assert statuses["mic.left"].state == FAILED
    assert "channel 2 is out of range: stream mic has 2 channel(s)" in statuses["mic.left"].message
    # The fix: declare the output again with a channel the stream has; it runs at once.
    bench.declare(Declaration("mic", "wav-channel", "mic.left", {"channel": 0}))
    statuses = bench.catch_up()
    assert statuses["mic.left"].state == CAUGHT_UP
    assert bench.arrays.open("mic.left").shape == (500,)


def test_records_into_columns_and_a_bad_value_fails_keeping_the_rows(bench: Bench) -> None:
    first = [{"cpu": 1.5, "memory": 10, "host": "a"}, {"cpu": 2.5}]  # no memory: NaN
    bench.ingest("monitor.h.system", record_chunk(first))
    bench.declare(rules=(declarations.Rule("monitor", "monitor.*.system", "records"),))
    statuses = bench.catch_up()
    assert statuses["monitor.h.system.columns"].state == CAUGHT_UP
    columns = bench.arrays.open("monitor.h.system.columns")
    assert columns.attributes["columns"] == ["time", "cpu", "memory"]
    expected = np.array([[1_700_000_000.0, 1.5, 10.0], [1_700_000_001.0, 2.5, np.nan]])
    np.testing.assert_array_equal(columns[:], expected)
    # A later record whose "cpu" is text: failed, with the entry named; the rows stay readable.
    bench.ingest("monitor.h.system", record_chunk([{"cpu": "high"}], start=1_700_000_002.0))
    statuses = bench.catch_up()
    failed = statuses["monitor.h.system.columns"]
    assert failed.state == FAILED
    assert "entry 2: field 'cpu' is 'high', not a number" in failed.message
    assert failed.outputs["monitor.h.system.columns"]["rows"] == 2
    np.testing.assert_array_equal(bench.arrays.open("monitor.h.system.columns")[:], expected)
    # Retried on demand: the same input fails the same way, counted again.
    with declarations.changing(bench.root) as declared:
        declared.retries["monitor.h.system.columns"] = 1
    statuses = bench.catch_up()
    assert statuses["monitor.h.system.columns"].state == FAILED
    assert statuses["monitor.h.system.columns"].failures == 1


def test_big_batches_are_cut_inside_entries_and_resumed(tmp_path) -> None:
    bench = Bench(str(tmp_path), batch_bytes=300)  # smaller than one chunk of entries
    try:
        records = [{"value": number} for number in range(150)]
        bench.ingest("sensor", record_chunk(records))
        bench.declare(Declaration("sensor", "records", "sensor.columns"))
        bench.catch_up()
        array = bench.arrays.open("sensor.columns")
        np.testing.assert_array_equal(array[:, 1], np.arange(150))
        assert array.consumed == bench.streams.get("sensor").stats.size
    finally:
        bench.close()
