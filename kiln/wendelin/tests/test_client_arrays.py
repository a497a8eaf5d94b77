"""The client's arrays and figures against a real server: save, list, slice, lazy Dask reads."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import requests
from matplotlib.figure import Figure  # drawn by Agg: no display needed

from kiln.testing.wendelin import cli
from kiln.wendelin import client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ctx(deployment) -> client.Context:
    return client.connect(deployment.url, *deployment.auth())


def counting(context: client.Context) -> list[str]:
    """The URLs of the requests ``context`` sends from now on."""
    urls: list[str] = []
    context.session.hooks["response"].append(lambda response, **_: urls.append(response.url))
    return urls


def test_save_an_ndarray_then_read_metadata_slices_and_dask(ctx: client.Context) -> None:
    data = np.arange(3000 * 3, dtype="<f8").reshape(3000, 3)
    saved = ctx.save_array("sensor.table", data, attributes={"unit": "V"})
    assert (saved.dtype, saved.shape, saved.attributes) == (data.dtype, data.shape, {"unit": "V"})
    assert "sensor.table" in ctx.arrays and "sensor.table" in ctx.arrays.names()
    array = ctx.arrays["sensor.table"]
    np.testing.assert_array_equal(array[10:20, 1], data[10:20, 1])
    np.testing.assert_array_equal(array[-1], data[-1])
    assert array[5:5].shape == (0, 3)
    lazy = array.to_dask()
    assert lazy.chunks[0][0] == min(array.chunks[0], 3000) and lazy.dtype == data.dtype
    np.testing.assert_array_equal(lazy.compute(), data)
    with pytest.raises(KeyError):
        ctx.arrays["sensor.none"]
    with pytest.raises(IndexError, match="step-1"):
        array[::2]
    with pytest.raises(ValueError, match="at least one dimension"):
        ctx.save_array("sensor.scalar", np.float64(1))


def test_to_dask_fetches_only_the_chunks_a_computation_needs(ctx: client.Context) -> None:
    data = np.arange(100_000, dtype="<i4")
    array = ctx.save_array("sensor.long", data, chunk_rows=10_000)
    lazy = array.to_dask()
    assert array.chunks == (10_000,) and lazy.numblocks == (10,)
    urls = counting(ctx)
    assert lazy[:10].sum().compute() == 45
    assert len(urls) == 1 and "slice=0%3A" in urls[0], urls


def test_a_dask_array_is_sent_block_by_block_in_bounded_requests(ctx: client.Context) -> None:
    source = da.arange(50_000, chunks=10_000, dtype="<i8") * 3
    urls = counting(ctx)
    array = ctx.save_array("sensor.blocks", source, request_bytes=40_000)
    # 5 blocks of 80,000 bytes, 2 requests each: one PUT, then appends.
    writes = [u for u in urls if "/api/arrays/sensor.blocks" in u and "/data" not in u]
    assert len([u for u in writes if u.endswith("/append")]) == 9, writes
    np.testing.assert_array_equal(array.to_dask().compute(), source.compute())
    # Saving again replaces the array.
    ctx.save_array("sensor.blocks", np.zeros(3, dtype="<i8"))
    assert ctx.arrays["sensor.blocks"].shape == (3,)


def test_saving_needs_the_owning_policys_credentials(deployment, ctx: client.Context) -> None:
    password = cli("reader", "add", "--root", deployment.server.root, "analyst").split()[-1]
    reader = client.connect(deployment.url, "analyst", password)
    assert "sensor.table" in reader.arrays.names()  # readers read
    with pytest.raises(client.ReadOnlyAccount, match="policy"):
        reader.save_array("sensor.by-reader", np.zeros(3))
    with pytest.raises(client.ReadOnlyAccount):
        reader.save_figure("sensor.by-reader.png", Figure())
    other = client.connect(deployment.url, *deployment.auth("secure"))
    with pytest.raises(client.ReadOnlyAccount):
        other.save_array("sensor.table", np.zeros(3))
    assert ctx.arrays["sensor.table"].shape == (3000, 3)  # untouched


def test_save_figure_stores_a_png_stream_once(ctx: client.Context) -> None:
    figure = Figure()
    figure.add_subplot().plot([1, 3, 2])
    stream = ctx.save_figure("sensor.plot.png", figure, dpi=50)
    assert stream.size > 100
    assert ctx.streams["sensor.plot.png"].read(0, 8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError):
        ctx.save_figure("sensor.plot.png", figure)


def test_an_error_answer_carries_the_servers_message(ctx: client.Context) -> None:
    with pytest.raises(requests.HTTPError, match="400"):
        ctx.get("/api/arrays/sensor.table/data", params={"slice": "0:99999999"})
