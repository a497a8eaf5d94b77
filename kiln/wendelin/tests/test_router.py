"""The router: the one path from every input to the streams, and its typed refusals."""

import asyncio

import msgpack
import pytest

from kiln.wendelin import chunks, eventtime
from kiln.wendelin.catalog import PolicyRecord
from kiln.wendelin.policies import Policy
from kiln.wendelin.refusals import Conflict, Malformed, TagRejected, Unavailable
from kiln.wendelin.router import Router, StreamExists
from kiln.wendelin.stream_reader import StreamReader
from kiln.wendelin.streams import StreamStore

pytestmark = pytest.mark.unit


def policy(name: str, tag_pattern: str) -> Policy:
    record = PolicyRecord(name, tag_pattern, f"{name}-user", "", False, False, 0.0)
    return Policy(record, shared_key="key", forward_password=None)


SENSORS = policy("sensors", "sensor.**")
OTHERS = policy("others", "**")


def entries(*numbers: int) -> bytes:
    return b"".join(msgpack.packb([eventtime.pack(1000.0 + n), {"n": n}]) for n in numbers)


async def pieces(*parts: bytes):
    for part in parts:
        yield part


def routed(tmp_path, work) -> object:
    """Run ``work(router, store)`` against a fresh store, closed afterwards."""

    async def run() -> object:
        store = StreamStore(str(tmp_path))
        try:
            return await work(Router(store), store)
        finally:
            await store.close()

    return asyncio.run(run())


def test_events_go_to_the_stream_their_tag_names_and_retries_are_stored_once(tmp_path) -> None:
    async def work(router: Router, store: StreamStore) -> list[bool]:
        chunk = chunks.parse_entries(entries(1, 2))
        first = await router.emit(SENSORS, "sensor.a", chunk, b"chunk-1")
        again = await router.emit(SENSORS, "sensor.a", chunk, b"chunk-1")
        by_content = await router.emit_unparsed(
            SENSORS, "sensor.a", entries(3), chunks.parse_entries
        )
        stream = store.get("sensor.a")
        assert stream is not None and stream.policy == "sensors" and stream.stats.entries == 3
        return [first, again, by_content]

    assert routed(tmp_path, work) == [True, False, True]


@pytest.mark.parametrize(
    ("sender", "tag", "refusal", "message"),
    [
        (SENSORS, "elsewhere.a", TagRejected, "does not accept tag 'elsewhere.a'"),
        (SENSORS, "sensor.a b", TagRejected, "cannot name a stream"),
        (OTHERS, "sensor.owned", TagRejected, "belongs to policy sensors, not others"),
        (SENSORS, "sensor.file", Conflict, "holds raw bytes, not entries"),
    ],
)
def test_refusals_are_typed_and_append_nothing(tmp_path, sender, tag, refusal, message) -> None:
    async def work(router: Router, store: StreamStore) -> None:
        await router.emit(SENSORS, "sensor.owned", chunks.parse_entries(entries(1)))
        await router.emit_raw(SENSORS, "sensor.file", pieces(b"RIFF"))
        sizes = {stream.name: stream.stats.size for stream in store}
        for emit in (
            lambda: router.emit(sender, tag, chunks.parse_entries(entries(2))),
            lambda: router.emit_unparsed(sender, tag, entries(2), chunks.parse_entries),
        ):
            with pytest.raises(refusal, match=message) as raised:
                await emit()
            assert str(raised.value).endswith("nothing appended")
        assert {stream.name: stream.stats.size for stream in store} == sizes

    routed(tmp_path, work)


def test_a_malformed_first_chunk_leaves_no_stream_behind(tmp_path) -> None:
    async def work(router: Router, store: StreamStore) -> None:
        with pytest.raises(Malformed, match="truncated"):
            await router.emit_unparsed(SENSORS, "sensor.new", entries(1)[:-1], chunks.parse_entries)
        assert store.get("sensor.new") is None

    routed(tmp_path, work)


def test_raw_uploads_create_a_stream_once(tmp_path) -> None:
    async def work(router: Router, store: StreamStore) -> None:
        assert await router.emit_raw(SENSORS, "sensor.wav", pieces(b"RI", b"FF"), new=True) == 4
        with pytest.raises(StreamExists, match="exists"):
            await router.emit_raw(SENSORS, "sensor.wav", pieces(b"more"), new=True)
        assert await router.emit_raw(SENSORS, "sensor.wav", pieces(b"more")) == 4
        stream = store.get("sensor.wav")
        assert stream is not None and stream.read(0, 100) == b"RIFFmore"

    routed(tmp_path, work)


def test_closing_refuses_every_emit_as_transient(tmp_path) -> None:
    async def work(router: Router, store: StreamStore) -> None:
        router.start_closing()
        for emit in (
            lambda: router.emit(SENSORS, "sensor.new", chunks.parse_entries(entries(1))),
            lambda: router.emit_unparsed(SENSORS, "sensor.new", entries(1), chunks.parse_entries),
            lambda: router.emit_raw(SENSORS, "sensor.new", pieces(b"x")),
        ):
            with pytest.raises(Unavailable, match="shutting down") as raised:
                await emit()
            assert raised.value.retry_after > 0
        assert store.get("sensor.new") is None  # not even created

    routed(tmp_path, work)


def test_readers_have_no_way_to_write(tmp_path) -> None:
    async def work(router: Router, store: StreamStore) -> None:
        await router.emit(SENSORS, "sensor.a", chunks.parse_entries(entries(1)))
        reader = store.get("sensor.a")
        assert isinstance(reader, StreamReader)
        for write in ("append", "append_by_content", "append_raw", "open_or_create"):
            assert not hasattr(reader, write)

    routed(tmp_path, work)
