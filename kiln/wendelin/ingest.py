"""The one path every ingest protocol takes: policy check, stream lookup, durable append."""

import hashlib
from collections.abc import Callable

from kiln.wendelin.chunks import Chunk
from kiln.wendelin.policies import Policy
from kiln.wendelin.streams import ENTRIES, NO_KEY, Stream, StreamStore, check_stream_name


class TagRejected(Exception):
    """The policy does not take this tag: a permanent refusal (HTTP 403, forward: no ack)."""


def forward_chunk_key(chunk_id: bytes) -> bytes:
    """Dedup key of a forward chunk: fluentd resends the same id with the same bytes."""
    return hashlib.sha256(b"forward\0" + chunk_id).digest()


def stream_for(store: StreamStore, policy: Policy, tag: str, kind: str = ENTRIES) -> Stream:
    """The stream a policy writes ``tag`` to, created on first use."""
    stream = existing_stream_for(store, policy, tag)
    return stream or store.open_or_create(tag, policy.name, kind)


def existing_stream_for(store: StreamStore, policy: Policy, tag: str) -> Stream | None:
    """The stream a policy writes ``tag`` to if it exists; TagRejected if it may not."""
    if not policy.accepts(tag):
        raise TagRejected(
            f"policy {policy.name} does not accept tag {tag!r} "
            f"(its tag pattern is {policy.record.tag_pattern!r})"
        )
    try:
        check_stream_name(tag)
    except ValueError as error:
        raise TagRejected(str(error)) from None
    stream = store.get(tag)
    if stream is not None and stream.policy != policy.name:
        raise TagRejected(f"stream {tag!r} belongs to policy {stream.policy}, not {policy.name}")
    return stream


async def ingest(
    store: StreamStore, policy: Policy, tag: str, chunk: Chunk, key: bytes = NO_KEY
) -> bool:
    """Append ``chunk`` durably; True if appended, False if it was a retry already stored."""
    return await stream_for(store, policy, tag).append(chunk, key)


async def ingest_http_chunk(
    store: StreamStore, policy: Policy, tag: str, data: bytes, check: Callable[[bytes], Chunk]
) -> bool:
    """Append an HTTP chunk, stored as ``data`` once ``check`` finds entries in it.

    fluentd resends a chunk byte for byte until it is acknowledged, so a chunk whose bytes
    repeat one stored within the retention window is a retry, and is not appended again.
    The check runs while the stream writes and flushes the bytes, so it adds nothing to the
    wait for the acknowledgement. A tag's first chunk is checked before its stream is
    created: a malformed body never leaves an empty stream behind.
    """
    stream = existing_stream_for(store, policy, tag)
    if stream is None:
        chunk = check(data)
        return await stream_for(store, policy, tag).append_by_content(data, lambda _: chunk)
    return await stream.append_by_content(data, check)
