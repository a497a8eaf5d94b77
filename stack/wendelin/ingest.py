"""The one path every ingest protocol takes: policy check, stream lookup, durable append."""

import hashlib

from wendelin.chunks import Chunk
from wendelin.policies import Policy
from wendelin.streams import ENTRIES, NO_KEY, Stream, StreamStore, check_stream_name


class TagRejected(Exception):
    """The policy does not take this tag: a permanent refusal (HTTP 403, forward: no ack)."""


_HTTP_KEY_PREFIX = b"http\0"


def http_chunk_key(body: bytes) -> bytes:
    """The dedup key of an HTTP chunk: a byte-identical resend is a retry, not new data."""
    digest = hashlib.sha256(_HTTP_KEY_PREFIX)
    digest.update(body)  # not prefix + body: that would copy a whole chunk just to hash it
    return digest.digest()


def forward_chunk_key(chunk_id: bytes) -> bytes:
    """Dedup key of a forward chunk: fluentd resends the same id with the same bytes."""
    return hashlib.sha256(b"forward\0" + chunk_id).digest()


def stream_for(store: StreamStore, policy: Policy, tag: str, kind: str = ENTRIES) -> Stream:
    """The stream a policy writes ``tag`` to, created on first use."""
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
    return stream or store.open_or_create(tag, policy.name, kind)


async def ingest(
    store: StreamStore, policy: Policy, tag: str, chunk: Chunk, key: bytes = NO_KEY
) -> bool:
    """Append ``chunk`` durably; True if appended, False if it was a retry already stored."""
    return await stream_for(store, policy, tag).append(chunk, key)
