"""CompressedPackedForward payloads: every gzip member is read, and output is bounded."""

import gzip
import time

import pytest
import zstandard

from kiln.wendelin.compression import DecompressionError, gunzip, unzstd

pytestmark = pytest.mark.unit


def test_gzip_reads_every_member_as_fluentd_appends_them() -> None:
    assert gunzip(gzip.compress(b"first ") + gzip.compress(b"second"), 100) == b"first second"


def test_zstd_reads_every_frame() -> None:
    compressor = zstandard.ZstdCompressor()
    blob = compressor.compress(b"first ") + compressor.compress(b"second")
    assert unzstd(blob, 100) == b"first second"


@pytest.mark.parametrize(
    "decompress, compress", [(gunzip, gzip.compress), (unzstd, zstandard.compress)]
)
def test_a_bomb_is_refused_at_the_limit(decompress, compress) -> None:
    with pytest.raises(DecompressionError, match="larger than 1000 bytes"):
        decompress(compress(b"\0" * 1_000_000), 1000)


@pytest.mark.parametrize("decompress", [gunzip, unzstd])
def test_garbage_and_truncation_are_named(decompress) -> None:
    with pytest.raises(DecompressionError):
        decompress(b"not compressed at all", 1000)
    with pytest.raises(DecompressionError):
        decompress(
            gzip.compress(b"x" * 100)[:-10]
            if decompress is gunzip
            else zstandard.compress(b"x" * 100)[:-3],
            1000,
        )


def test_incompressible_multi_frame_zstd_keeps_every_byte() -> None:
    import os

    first, second = os.urandom(5000), os.urandom(7000)
    compressor = zstandard.ZstdCompressor()
    blob = compressor.compress(first) + compressor.compress(second)
    assert unzstd(blob, 1 << 20) == first + second


@pytest.mark.parametrize(
    "decompress, compress", [(gunzip, gzip.compress), (unzstd, zstandard.compress)]
)
def test_members_past_the_limit_are_refused(decompress, compress) -> None:
    member = compress(b"x")
    assert decompress(member * 5, 100, max_members=5) == b"x" * 5
    with pytest.raises(DecompressionError, match="more than 5"):
        decompress(member * 6, 100, max_members=6 - 1)


@pytest.mark.parametrize(
    "decompress, compress", [(gunzip, gzip.compress), (unzstd, zstandard.compress)]
)
def test_many_empty_members_cost_linear_time(decompress, compress) -> None:
    """A megabyte of empty members took seconds (each member copied the rest of the input);
    the work is now in proportion to the input, so 1 and 4 MiB take about 1x and 4x."""
    member = compress(b"")
    timings = []
    for mebibytes in (1, 4):
        blob = member * (mebibytes * 2**20 // len(member))
        started = time.perf_counter()
        assert decompress(blob, 2**20, max_members=len(blob)) == b""
        timings.append(time.perf_counter() - started)
    assert timings[1] < 8 * max(timings[0], 0.05), timings
