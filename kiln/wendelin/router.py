"""The one ingest path: every input hands its data to the router, and only the router writes.

As in fluentd, an input decodes its wire format and authenticates its sender to a policy,
then emits ``(policy, tag, data, dedup key)`` here. The router matches the tag against the
policy (its ``<match>``), finds the stream of that name or creates it, and appends:

* ``emit``: events already checked (forward messages, ``/tags``, manual appends), with the
  sender's chunk id when its retries repeat it (forward's ``chunk`` option);
* ``emit_unparsed``: a chunk still to check, stored byte for byte, whose byte-identical resend
  is a retry (fluent-plugin-wendelin's HTTP chunks);
* ``emit_raw``: raw bytes, streamed to a raw byte stream (uploads).

It refuses with the typed exceptions of ``refusals``; nothing of a refused emit is stored.
"""

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable

from kiln.wendelin.chunks import Chunk
from kiln.wendelin.policies import Policy
from kiln.wendelin.refusals import Conflict, TagRejected, Unavailable
from kiln.wendelin.streams import (
    ENTRIES,
    NO_KEY,
    RAW,
    StoreWriter,
    StreamKindError,
    StreamWriter,
    check_stream_name,
)


class StreamExists(Conflict):
    """A new stream was asked for under a name that is taken."""


class StreamLimitReached(TagRejected):
    """The policy owns as many streams as it may: a new tag is refused, not stored.

    A 403 like any tag the policy does not take, not a 429 or 503: the condition lasts until
    an operator acts, and fluentd retries a retryable answer with one backoff for the whole
    output, so every other tag of that output would wait behind the refused one. out_http
    logs and drops a 403 chunk; out_forward gets no ack and resends.
    """


def retry_key(chunk_id: bytes) -> bytes:
    """Dedup key of a chunk by its sender's id: fluentd resends the same id with the same
    bytes. Stored in the index, so it must never change (keys written before would no longer
    match their resends)."""
    return hashlib.sha256(b"forward\0" + chunk_id).digest()


class Router:
    """Routes emitted data to streams within the sender's policy; the store's only writer."""

    def __init__(self, store: StoreWriter, max_streams_per_policy: int = 1_000) -> None:
        self._store = store
        self.max_streams_per_policy = max_streams_per_policy
        self.closing = False

    def refuse_if_closing(self) -> None:
        """Unavailable once shutting down; inputs also ask before receiving a body."""
        if self.closing:
            raise Unavailable("shutting down", retry_after=10)

    def start_closing(self) -> None:
        """Refuse every new emit; what is queued still commits."""
        self.closing = True
        self._store.start_closing()

    def emit(
        self, policy: Policy, tag: str, chunk: Chunk, chunk_id: bytes | None = None
    ) -> asyncio.Future[bool]:
        """Append checked events; the future is True once they are durable, False if
        ``chunk_id`` was already stored (a retry), and raises a refusal if the commit fails."""
        key = NO_KEY if chunk_id is None else retry_key(chunk_id)
        return self._entry_stream(policy, tag).append(chunk, key)

    def emit_unparsed(
        self, policy: Policy, tag: str, data: bytes, parse: Callable[[bytes], Chunk]
    ) -> asyncio.Future[bool]:
        """Append ``data`` as it is once ``parse`` finds entries in it (Malformed if not);
        False if the same bytes were already stored (a retry).

        The parse runs while the stream writes and flushes the bytes, so it adds nothing to
        the wait for the acknowledgement. A tag's first chunk is parsed before its stream is
        created: a malformed body never leaves an empty stream behind.
        """
        self.refuse_if_closing()
        stream = self._stream_of(policy, tag)
        if stream is None:
            chunk = parse(data)
            stream = self._create(policy, tag, ENTRIES)
            return stream.append_by_content(data, lambda _: chunk)
        _check_entries(stream)
        return stream.append_by_content(data, parse)

    async def emit_raw(
        self, policy: Policy, name: str, pieces: AsyncIterator[bytes], new: bool = False
    ) -> int:
        """Append ``pieces`` as one chunk to raw byte stream ``name`` (created if missing;
        ``new``: it must not exist yet); how many bytes were appended."""
        self.refuse_if_closing()
        stream = self._stream_of(policy, name)
        if stream is not None and new:
            raise StreamExists(f"stream {name!r} exists: append to it, or upload to a new name")
        stream = stream or self._create(policy, name, RAW)
        return await stream.append_raw(pieces)

    def _entry_stream(self, policy: Policy, tag: str) -> StreamWriter:
        self.refuse_if_closing()
        stream = self._stream_of(policy, tag)
        if stream is None:
            return self._create(policy, tag, ENTRIES)
        _check_entries(stream)
        return stream

    def _create(self, policy: Policy, name: str, kind: str) -> StreamWriter:
        """A new stream for ``policy``, within its limit (StreamLimitReached past it)."""
        if self._store.count_of(policy.name) >= self.max_streams_per_policy:
            raise StreamLimitReached(
                f"policy {policy.name} already has {self.max_streams_per_policy} streams, "
                f"its limit (kiln wendelin serve --max-streams-per-policy): tag {name!r} "
                "would be a new one; nothing appended. Send to an existing tag, narrow the "
                "tag pattern, or raise the limit"
            )
        return self._store.open_or_create(name, policy.name, kind)

    def _stream_of(self, policy: Policy, tag: str) -> StreamWriter | None:
        """The stream ``policy`` writes ``tag`` to if it exists; TagRejected if it may not."""
        if not policy.accepts(tag):
            raise _rejected(
                f"policy {policy.name} does not accept tag {tag!r} "
                f"(its tag pattern is {policy.record.tag_pattern!r})"
            )
        try:
            check_stream_name(tag)
        except ValueError as error:
            raise _rejected(str(error)) from None
        stream = self._store.writer(tag)
        if stream is not None and stream.policy != policy.name:
            raise _rejected(f"stream {tag!r} belongs to policy {stream.policy}, not {policy.name}")
        return stream


def _rejected(reason: str) -> TagRejected:
    return TagRejected(f"{reason}; nothing appended")


def _check_entries(stream: StreamWriter) -> None:
    if stream.kind != ENTRIES:
        raise StreamKindError(
            f"stream {stream.name} holds raw bytes, not entries; "
            "send entries to another tag, nothing appended"
        )
