"""Data streams on disk: group commit, exactly-once keys, crash recovery, reads."""

import asyncio
import os
import time

import msgpack
import pytest

from kiln.wendelin import chunks, eventtime
from kiln.wendelin.streams import StreamStore

pytestmark = pytest.mark.unit


def chunk_of(*numbers: int) -> chunks.Chunk:
    return chunks.parse_entries(
        b"".join(msgpack.packb([eventtime.pack(1000.0 + n), {"n": n}]) for n in numbers)
    )


def run(coroutine):
    return asyncio.run(coroutine)


async def append_all(root: str, items: list[tuple[chunks.Chunk, bytes]]) -> list[bool]:
    store = StreamStore(root)
    stream = store.open_or_create("s", "p")
    results = await asyncio.gather(*(stream.append(chunk, key) for chunk, key in items))
    await store.close()
    return list(results)


def test_group_commit_and_keys_make_retries_exactly_once(tmp_path) -> None:
    key_a, key_b = b"a" * 32, b"b" * 32
    results = run(
        append_all(
            str(tmp_path),
            [(chunk_of(1, 2), key_a), (chunk_of(1, 2), key_a), (chunk_of(3), key_b)],
        )
    )
    assert results == [True, False, True]  # the in-flight duplicate waits and reports False
    # After a restart the key is still known: the resend is acknowledged, not appended.
    assert run(append_all(str(tmp_path), [(chunk_of(1, 2), key_a)])) == [False]
    store = StreamStore(str(tmp_path))
    stream = store.get("s")
    assert stream is not None
    assert stream.stats.entries == 3
    data, next_start = stream.scan_entries()
    assert [record["n"] for _, record in chunks.iter_entries(data)] == [1, 2, 3]
    assert next_start is None
    run(store.close())


def test_torn_tails_are_cut_off_on_open(tmp_path) -> None:
    run(append_all(str(tmp_path), [(chunk_of(1), b"k" * 32), (chunk_of(2), bytes(32))]))
    directory = tmp_path / "streams" / "s"
    good_size = os.path.getsize(directory / "data")
    # A crash mid-commit: data written past the index, and half an index record.
    with open(directory / "data", "ab") as data:
        data.write(msgpack.packb([eventtime.pack(5.0), {"n": 99}])[:7])
    with open(directory / "index", "ab") as index:
        index.write(b"WDS1" + b"\x01" * 30)
    store = StreamStore(str(tmp_path))
    stream = store.get("s")
    assert stream is not None
    assert stream.stats.size == good_size == os.path.getsize(directory / "data")
    assert stream.stats.entries == 2
    assert stream.read(0, 1 << 20) == chunk_of(1).data + chunk_of(2).data
    run(store.close())


def test_a_corrupt_index_record_ends_the_stream_there(tmp_path) -> None:
    run(append_all(str(tmp_path), [(chunk_of(1), bytes(32)), (chunk_of(2), bytes(32))]))
    index_path = tmp_path / "streams" / "s" / "index"
    raw = bytearray(index_path.read_bytes())
    raw[-10] ^= 0xFF  # flip a bit in the last record: its CRC no longer matches
    index_path.write_bytes(bytes(raw))
    store = StreamStore(str(tmp_path))
    stream = store.get("s")
    assert stream is not None and stream.stats.entries == 1
    run(store.close())


def test_entry_and_time_reads(tmp_path) -> None:
    run(append_all(str(tmp_path), [(chunk_of(*range(i, i + 10)), bytes(32)) for i in (0, 10, 20)]))
    store = StreamStore(str(tmp_path))
    stream = store.get("s")
    assert stream is not None

    def numbers(data: bytes) -> list[int]:
        return [record["n"] for _, record in chunks.iter_entries(data)]

    data, next_start = stream.scan_entries(5, 15)
    assert numbers(data) == list(range(5, 15)) and next_start is None
    data, next_start = stream.scan_entries(0, limit=4)
    assert numbers(data) == [0, 1, 2, 3] and next_start == 4
    data, _ = stream.scan_entries(since=1012.0, until=1022.0)
    assert numbers(data) == list(range(12, 22))
    data, next_start = stream.scan_entries(since=1000.0, max_scan_bytes=1)
    assert numbers(data) == list(range(10)) and next_start == 10  # paged, bounded work
    run(store.close())


def test_raw_upload_streams_and_indexes_one_chunk(tmp_path) -> None:
    async def upload() -> None:
        store = StreamStore(str(tmp_path))
        stream = store.open_or_create("file.wav", "p", kind="raw")

        async def pieces():
            for number in range(3):
                yield bytes([number]) * 1000

        assert await stream.append_raw(pieces()) == 3000
        await store.close()

    run(upload())
    store = StreamStore(str(tmp_path))
    stream = store.get("file.wav")
    assert stream is not None and stream.stats.size == 3000 and stream.kind == "raw"
    assert stream.read(999, 2) == b"\x00\x01"
    run(store.close())


def test_too_much_queued_data_is_refused_as_transient(tmp_path) -> None:
    from kiln.wendelin.streams import StreamUnavailable

    async def flood() -> None:
        store = StreamStore(str(tmp_path), max_pending_bytes=100)
        stream = store.open_or_create("s", "p")
        on_disk = stream.append(chunk_of(*range(20)))  # no commit under way: to disk at once
        queued = stream.append(chunk_of(*range(20, 40)))  # waits, larger than the bound alone
        with pytest.raises(StreamUnavailable, match="overloaded"):
            stream.append(chunk_of(*range(40, 60)))
        assert await on_disk is True and await queued is True
        await store.close()

    run(flood())


def test_closing_refuses_new_appends_but_commits_queued_ones(tmp_path) -> None:
    from kiln.wendelin.streams import StreamUnavailable

    async def shut_down() -> None:
        store = StreamStore(str(tmp_path))
        stream = store.open_or_create("s", "p")
        queued = stream.append(chunk_of(1))
        store.start_closing()
        with pytest.raises(StreamUnavailable, match="shutting down"):
            stream.append(chunk_of(2))
        await store.close()
        assert queued.result() is True

    run(shut_down())
    store = StreamStore(str(tmp_path))
    assert store.get("s").stats.entries == 1  # type: ignore[union-attr]
    run(store.close())


def test_dedup_memory_is_bounded_oldest_keys_first(tmp_path, monkeypatch) -> None:
    from kiln.wendelin import streams

    monkeypatch.setattr(streams, "MAX_DEDUP_KEYS", 3)
    keys = [bytes([number]) * 32 for number in range(1, 6)]
    run(append_all(str(tmp_path), [(chunk_of(n), key) for n, key in enumerate(keys)]))
    store = StreamStore(str(tmp_path))  # reopening prunes to the bound
    stream = store.writer("s")
    assert stream is not None

    async def resend() -> list[bool]:
        return [
            await stream.append(chunk_of(0), keys[0]),
            await stream.append(chunk_of(4), keys[4]),
        ]

    assert run(resend()) == [True, False]  # the oldest key was forgotten, the newest is known
    run(store.close())


def test_time_queries_skip_old_chunks_without_reading_them(tmp_path) -> None:
    run(append_all(str(tmp_path), [(chunk_of(n), bytes(32)) for n in range(100)]))
    store = StreamStore(str(tmp_path))
    stream = store.get("s")
    assert stream is not None
    reads: list[int] = []
    original = stream.read

    def counting_read(offset: int, length: int) -> bytes:
        reads.append(offset)
        return original(offset, length)

    stream.read = counting_read  # type: ignore[method-assign]
    data, next_start = stream.scan_entries(since=1095.0)
    assert [record["n"] for _, record in chunks.iter_entries(data)] == [95, 96, 97, 98, 99]
    assert len(reads) == 5 and next_start is None  # only the 5 chunks that can match
    run(store.close())


def test_commits_count_the_fsyncs_that_grouped_chunks(tmp_path) -> None:
    async def appends() -> tuple[int, int]:
        store = StreamStore(str(tmp_path))
        stream = store.open_or_create("s", "p")
        await stream.append(chunk_of(0))  # alone: one commit
        # The first goes to disk at once, alone; the others queue behind it and go together.
        await asyncio.gather(*(stream.append(chunk_of(n)) for n in range(1, 9)))
        counts = stream.stats.chunks, stream.stats.commits
        await store.close()
        return counts

    chunk_count, commit_count = run(appends())
    assert chunk_count == 9 and 2 <= commit_count < 9
    store = StreamStore(str(tmp_path))  # the count is rebuilt from the index
    assert store.get("s").stats.commits == commit_count  # type: ignore[union-attr]
    run(store.close())


def entries_of(*numbers: int) -> bytes:
    return chunk_of(*numbers).data


def test_a_chunk_failing_its_check_is_cut_out_of_its_commit(tmp_path) -> None:
    """Bytes are written while their check runs; a refused chunk's bytes never stay."""
    bad = b"\xc1" * 100

    async def appends() -> list[object]:
        store = StreamStore(str(tmp_path))
        stream = store.open_or_create("s", "p")
        # The first goes to disk at once; the other two queue behind it and share the next
        # commit, so the refused one is written and flushed beside a good one.
        pending = [
            stream.append_by_content(data, chunks.parse_entries)
            for data in (entries_of(1), bad, entries_of(2))
        ]
        results = await asyncio.gather(*pending, return_exceptions=True)
        await store.close()
        return results

    first, refused, second = run(appends())
    assert first is True and second is True
    assert isinstance(refused, chunks.ChunkError)
    data_path = tmp_path / "streams" / "s" / "data"
    assert data_path.read_bytes() == entries_of(1) + entries_of(2)
    store = StreamStore(str(tmp_path))
    stream = store.get("s")
    assert stream is not None and stream.stats.chunks == 2 and stream.stats.entries == 2
    run(store.close())


def test_a_chunk_goes_to_disk_before_its_check_ends(tmp_path) -> None:
    """With no commit under way, the disk thread starts on a chunk at once, and the check
    (on the event loop) runs meanwhile instead of delaying the acknowledgement."""
    data = entries_of(1)
    data_path = tmp_path / "streams" / "s" / "data"

    def check_once_written(body: bytes) -> chunks.Chunk:
        deadline = time.monotonic() + 10
        while os.path.getsize(data_path) < len(body):
            assert time.monotonic() < deadline, "nothing was written while the check ran"
            time.sleep(0.001)
        return chunks.parse_entries(body)

    async def append() -> bool:
        store = StreamStore(str(tmp_path))
        stream = store.open_or_create("s", "p")
        appended = await stream.append_by_content(data, check_once_written)
        await store.close()
        return appended

    assert run(append()) is True
    assert data_path.read_bytes() == data


def test_a_chunk_whose_check_fails_alone_leaves_nothing(tmp_path) -> None:
    async def appends() -> None:
        store = StreamStore(str(tmp_path))
        stream = store.open_or_create("s", "p")
        await stream.append_by_content(entries_of(1), chunks.parse_entries)
        with pytest.raises(chunks.ChunkError, match="truncated"):
            await stream.append_by_content(entries_of(2)[:-1], chunks.parse_entries)
        assert stream.stats.chunks == 1
        await store.close()

    run(appends())
    assert (tmp_path / "streams" / "s" / "data").read_bytes() == entries_of(1)


def test_content_retries_are_matched_by_their_bytes(tmp_path, monkeypatch) -> None:
    from kiln.wendelin import streams

    async def appends(*datas: bytes) -> list[bool]:
        store = StreamStore(str(tmp_path))
        stream = store.open_or_create("s", "p")
        pending = [stream.append_by_content(data, chunks.parse_entries) for data in datas]
        results = await asyncio.gather(*pending)
        await store.close()
        return list(results)

    # A resend while the first is in flight, then one after a restart: stored once.
    assert run(appends(entries_of(1), entries_of(1))) == [True, False]
    assert run(appends(entries_of(1))) == [False]
    # Every chunk hashing alike: the bytes still tell them apart, so none is dropped (a
    # resend is then recognised against the latest chunk of its key only).
    monkeypatch.setattr(streams, "content_key", lambda data: streams._CONTENT_KEY_TAG + bytes(16))
    assert run(appends(entries_of(2), entries_of(3))) == [True, True]
    assert run(appends(entries_of(3), entries_of(4))) == [False, True]
    store = StreamStore(str(tmp_path))
    stream = store.get("s")
    assert stream is not None
    data, _ = stream.scan_entries()
    assert [record["n"] for _, record in chunks.iter_entries(data)] == [1, 2, 3, 4]
    run(store.close())


def test_a_resend_of_a_refused_chunk_is_refused_too(tmp_path) -> None:
    truncated = entries_of(1)[:-1]

    async def appends() -> list[object]:
        store = StreamStore(str(tmp_path))
        stream = store.open_or_create("s", "p")
        pending = [stream.append_by_content(truncated, chunks.parse_entries) for _ in range(2)]
        results = await asyncio.gather(*pending, return_exceptions=True)
        await store.close()
        return results

    assert all(isinstance(result, chunks.ChunkError) for result in run(appends()))
    assert (tmp_path / "streams" / "s" / "data").read_bytes() == b""
