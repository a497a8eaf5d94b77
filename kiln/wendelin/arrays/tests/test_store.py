"""Data arrays in a Zarr v3 store: appends, atomicity across processes and kills, the pyramid."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr
import zarr.storage

from kiln.wendelin.arrays import ArrayError, ArrayStore, Provenance, UnknownArray

pytestmark = pytest.mark.unit


def brute_window(values: np.ndarray, window) -> tuple[list, list]:
    edges = range(window.start, window.stop, window.step)
    pieces = [values[edge : min(edge + window.step, window.stop)] for edge in edges]
    return [np.nanmin(p) for p in pieces], [np.nanmax(p) for p in pieces]


def test_create_append_read_and_reopen(tmp_path):
    store = ArrayStore(tmp_path)
    array = store.create(
        "pcm",
        "<i2",
        chunk_rows=100,
        attributes={"rate": 8000},
        policy="audio",
        source=Provenance("wav", 44, 44),
    )
    assert (array.shape, array.consumed, array.chunks) == ((0,), 44, (100,))
    array.append(np.arange(250, dtype="<i2"), consumed=544)
    array.append(np.arange(5, dtype="u1"), consumed=554)  # widened safely
    again = ArrayStore(tmp_path).open("pcm")
    assert again.shape == (255,)
    assert again.attributes == {"rate": 8000}
    assert again.policy == "audio"
    assert again.provenance == Provenance("wav", 44, 554)
    assert np.array_equal(again[245:], [245, 246, 247, 248, 249, 0, 1, 2, 3, 4])
    assert np.array_equal(again.to_dask()[:250].compute(), np.arange(250))
    assert store.names() == ["pcm"]
    # Plain Zarr: any Zarr v3 reader opens the data.
    plain = zarr.open_array(str(tmp_path), path="pcm/data", mode="r")
    assert plain.shape == (255,)


def test_zero_rows_move_the_cursor_and_set_attributes(tmp_path):
    array = ArrayStore(tmp_path).create("a", "f8", source=Provenance("s", 0, 0))
    array.append(np.empty(0), consumed=100)
    array.set_attributes(unit="V")
    array = ArrayStore(tmp_path).open("a")
    assert (array.shape, array.consumed, array.attributes) == ((0,), 100, {"unit": "V"})


def test_bad_input_is_refused_and_changes_nothing(tmp_path):
    store = ArrayStore(tmp_path)
    array = store.create("ints", "<i4", inner_shape=(2,))
    array.append(np.ones((3, 2), "<i4"), consumed=10)
    refused = [
        (np.ones((2, 2), "f8"), None, "without loss"),
        (np.ones((2, 3), "<i4"), None, r"shaped \(2,\)"),
        (np.ones(4, "<i4"), None, r"shaped \(2,\)"),
        (np.array([[None, None]], dtype=object), None, "cannot go into"),
        (np.ones((1, 2), "<i4"), 5, "only moves forward"),
    ]
    for rows, consumed, message in refused:
        with pytest.raises(ArrayError, match=message):
            array.append(rows, consumed=consumed)
    for name in ("..", "a/b", "a\nb", "", ".hidden", "x" * 201):
        with pytest.raises(ArrayError, match="cannot name an array"):
            store.create(name, "f4")
    for dtype in ("O", "U4", [("a", "f4")]):
        with pytest.raises(ArrayError, match="cannot be stored"):
            store.create("obj", dtype)
    with pytest.raises(ArrayError, match="reserved"):
        store.create("k", "f4", attributes={"kiln": 1})
    with pytest.raises(ArrayError, match="already exists"):
        store.create("ints", "f4")
    with pytest.raises(ArrayError, match="exists with dtype"):
        store.create("ints", "f4", exist_ok=True)
    with pytest.raises(UnknownArray):
        store.open("nothing")
    with pytest.raises(ArrayError, match="outside"):
        array.window(0, 10, 5)
    array = store.open("ints")
    assert array.shape == (3, 2) and array.consumed == 10 and array[:].sum() == 6
    assert store.names() == ["ints"]


def test_remove(tmp_path):
    store = ArrayStore(tmp_path)
    store.create("gone", "f4").append(np.ones(10, "f4"))
    store.remove("gone")
    assert store.names() == []
    with pytest.raises(UnknownArray):
        store.open("gone")
    with pytest.raises(UnknownArray):
        store.remove("gone")


@pytest.mark.parametrize("dtype", ["<f4", "<i2", "u1"])
def test_window_matches_a_brute_force_min_max_over_many_appends(tmp_path, dtype):
    rng = np.random.default_rng(7)
    array = ArrayStore(tmp_path).create("w", dtype, chunk_rows=1000)
    pieces = []
    for _ in range(30):
        rows = (rng.standard_normal(int(rng.integers(0, 9000))) * 100).astype(dtype)
        if dtype == "<f4" and len(rows):
            rows[rng.integers(0, len(rows))] = np.nan  # NaN never hides the min/max
        pieces.append(rows)
        array.append(rows)
    values = np.concatenate(pieces)
    assert np.array_equal(array[:], values, equal_nan=True)
    for start, stop, buckets in [
        (0, len(values), 1000),
        (0, len(values), 7),
        (3, 4000, 50),
        (1234, len(values) - 5, 300),
        (10, 11, 1000),
        (0, len(values), 1),
    ]:
        window = array.window(start, stop, buckets)
        assert window.start <= start and window.stop >= stop and len(window.minimum) <= buckets
        minimum, maximum = brute_window(values, window)
        assert np.array_equal(window.minimum, minimum) and np.array_equal(window.maximum, maximum)
    # The coarsest level that still gives `buckets` points: 1,000 over ~130k rows is level 2.
    assert array.window(0, len(values), 1000).level == 2


def test_window_per_column_of_a_2d_array(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.integers(-30000, 30000, (50_000, 3)).astype("<i2")
    array = ArrayStore(tmp_path).create("cols", "<i2", inner_shape=(3,))
    for piece in np.array_split(values, 7):
        array.append(piece)
    for column in range(3):
        window = array.window(100, 49_000, 64, column=column)
        assert window.level == 3  # 8**3 * 64 <= 48,900 rows < 8**4 * 64
        minimum, maximum = brute_window(values[:, column], window)
        assert np.array_equal(window.minimum, minimum) and np.array_equal(window.maximum, maximum)
    with pytest.raises(ArrayError, match="column 3"):
        array.window(0, 10, 5, column=3)


def test_same_code_on_an_object_store(tmp_path):
    # zarr's MemoryStore stands in for an object store (S3, GCS through FsspecStore): none
    # runs here, and the store code only uses the Zarr Store interface, as it would there.
    memory = zarr.storage.MemoryStore()
    store = ArrayStore(memory)
    array = store.create("obj", "<f4", inner_shape=(2,), chunk_rows=64)
    values = np.arange(1000, dtype="<f4").reshape(500, 2)
    array.append(values[:300], consumed=3)
    array.append(values[300:], consumed=5)
    again = ArrayStore(memory).open("obj")
    assert np.array_equal(again[:], values) and again.consumed == 5
    assert again.window(0, 500, 10, column=1).maximum[-1] == 999
    assert store.names() == ["obj"]


# A writer in another process appends blocks of BLOCK rows, block k all equal to k; what a
# reader may see is a whole number of blocks, each right, with `consumed` equal to the rows.
BLOCK = 20_000
WRITER = textwrap.dedent(
    """
    import sys, time, numpy as np
    from kiln.wendelin.arrays import ArrayStore, store as module
    root, marker, blocks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if marker != "-":
        commit = module._StagedMetadata.commit
        async def stalled(self):  # stop between the chunks and the commit, to be killed there
            open(marker, "w").close()
            time.sleep(60)
            await commit(self)
        module._StagedMetadata.commit = stalled
    array = ArrayStore(root).open("a")
    for _ in range(blocks):
        k = len(array) // BLOCK
        array.append(np.full(BLOCK, k, "<i4"), consumed=(k + 1) * BLOCK)
    """
).replace("BLOCK", str(BLOCK))


def check_consistent(array) -> int:
    length = len(array)
    assert length % BLOCK == 0 and array.consumed == length
    values = array[:]
    assert np.array_equal(values, np.repeat(np.arange(length // BLOCK), BLOCK))
    if length:
        assert array.window(0, length, 10).maximum[-1] == length // BLOCK - 1
    return length


def test_a_reader_in_another_process_never_sees_half_an_append(tmp_path):
    ArrayStore(tmp_path).create("a", "<i4", chunk_rows=3000)  # appends end mid-chunk
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "-", "15"])
    seen = set()
    try:
        store = ArrayStore(tmp_path)
        while writer.poll() is None:
            seen.add(check_consistent(store.open("a")))
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert check_consistent(ArrayStore(tmp_path).open("a")) == 15 * BLOCK
    assert len(seen) > 2  # the reader did look while appends were going on


def test_a_writer_killed_mid_append_leaves_the_last_complete_state(tmp_path):
    ArrayStore(tmp_path).create("a", "<i4", chunk_rows=3000)
    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), "-", "2"], check=True)
    marker = tmp_path / "stalled"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(marker), "1"])
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the writer never reached its commit"
    os.kill(writer.pid, signal.SIGKILL)  # its chunks are written, its commit is not
    writer.wait()
    assert check_consistent(ArrayStore(tmp_path).open("a")) == 2 * BLOCK
    # A random kill, anywhere in an append, and the next appends are right.
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "-", "50"])
    time.sleep(1.0)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    length = check_consistent(ArrayStore(tmp_path).open("a"))
    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), "-", "2"], check=True)
    assert check_consistent(ArrayStore(tmp_path).open("a")) == length + 2 * BLOCK
