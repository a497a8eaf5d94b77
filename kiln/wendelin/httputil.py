"""Small helpers shared by the HTTP handlers: keys, error answers, bounded body reading."""

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator

import msgpack
from aiohttp import web

from kiln.common.http import error
from kiln.wendelin.policies import Policy
from kiln.wendelin.refusals import (
    Conflict,
    Malformed,
    Refusal,
    TagRejected,
    TooLarge,
    Unavailable,
)
from kiln.wendelin.service import Account, Service
from kiln.wendelin.stream_reader import StreamReader

SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
REALM = 'Basic realm="wendelin"'
# The HTTP status of each refusal but Unavailable (503, see answer_refusal), first match wins.
_REFUSAL_STATUSES: tuple[tuple[type[Refusal], int], ...] = (
    (Malformed, 400),
    (TagRejected, 403),
    (Conflict, 409),
    (TooLarge, 413),
)


def service_of(request: web.Request) -> Service:
    return request.app[SERVICE]


class Failure(Exception):
    """Raised from deep in a handler; the middleware answers with ``response``."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


def answer_refusal(refusal: Refusal) -> web.Response:
    """The HTTP answer to a refusal, for every HTTP input: the one place they are mapped.

    503 + ``Retry-After`` for a transient one, which fluentd retries; a 4xx naming the
    problem for the others, which fluentd reports instead of retrying.
    """
    if isinstance(refusal, Unavailable):
        return unavailable(str(refusal), refusal.retry_after)
    status = next((code for kind, code in _REFUSAL_STATUSES if isinstance(refusal, kind)), 400)
    return error(status, str(refusal))


@web.middleware
async def failures(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Failure as failure:
        return failure.response
    except Refusal as refusal:
        return answer_refusal(refusal)


_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SAME, CROSS, UNKNOWN = "same-origin", "cross-site", "unknown"


def origin_of(request: web.Request) -> str:
    """Whether a browser says the request comes from this site's own pages.

    ``Sec-Fetch-Site`` (same-origin, or none for a typed URL) and ``Origin`` (compared by
    host, so that it also holds behind a TLS-terminating proxy that keeps the Host header)
    are set by browsers and cannot be forged by a page; ``Origin: null`` (sandboxed frames,
    some redirects) is cross-site. Clients that are not browsers (fluentd, curl, the Python
    client) send neither: UNKNOWN.
    """
    verdicts = set()
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        verdicts.add(SAME if fetch_site in ("same-origin", "none") else CROSS)
    origin = request.headers.get("Origin")
    if origin is not None:
        verdicts.add(SAME if origin.partition("://")[2] == request.host else CROSS)
    if CROSS in verdicts:
        return CROSS
    return SAME if verdicts else UNKNOWN


@web.middleware
async def same_origin(request: web.Request, handler) -> web.StreamResponse:
    """Refuse (403) a state-changing request a browser made from another site.

    A browser that has cached Basic credentials sends them with a cross-site form post or
    ``fetch`` too (CSRF); such a request always carries a cross-site ``Origin`` or
    ``Sec-Fetch-Site``. Checked before credentials, so it costs no scrypt.
    """
    if request.method in _STATE_CHANGING and origin_of(request) == CROSS:
        return error(
            403,
            f"cross-site request refused: {request.method} {request.path} must come from this "
            "site's own pages, or from a client that is not a browser",
        )
    return await handler(request)


def require_content_type(request: web.Request, accepted: tuple[str, ...]) -> None:
    """415 unless the body is one of ``accepted`` (no Content-Type at all is accepted).

    ``text/plain`` in particular is refused on ingest: it is what a cross-site page can send
    without asking the browser first, and none of our senders use it.
    """
    if "Content-Type" in request.headers and request.content_type not in accepted:
        raise Failure(
            error(
                415,
                f"unsupported Content-Type {request.content_type!r}: send one of "
                + ", ".join(accepted),
            )
        )


@web.middleware
async def credentials(request: web.Request, handler) -> web.StreamResponse:
    """Check Basic credentials off the event loop first, so handlers only look them up."""
    await service_of(request).verify_credentials(request)
    return await handler(request)


def unavailable(reason: str, retry_after: int) -> web.Response:
    return error(
        503, f"temporarily unavailable, retry later: {reason}", **{"Retry-After": str(retry_after)}
    )


def unauthorized(message: str = "wrong or missing credentials") -> web.Response:
    return error(401, message, **{"WWW-Authenticate": REALM})


def require_account(request: web.Request) -> Account:
    account = service_of(request).authenticate(request)
    if account is None:
        raise Failure(unauthorized())
    return account


def readable_stream(request: web.Request, account: Account) -> StreamReader:
    """The stream named in the path, if ``account`` may read it (404 otherwise)."""
    stream = service_of(request).streams.get(request.match_info["name"])
    if stream is None or not account.may_read(stream):
        raise Failure(error(404, f"no stream named {request.match_info['name']!r}"))
    return stream


def writable_stream(request: web.Request, account: Account) -> tuple[StreamReader, Policy]:
    """The stream named in the path and the policy that writes it, if ``account`` is it."""
    stream = readable_stream(request, account)
    if account.policy is None or not account.may_write(stream):
        message = f"only policy {stream.policy} may write to stream {stream.name}"
        raise Failure(error(403, message))
    return stream, account.policy


@contextlib.contextmanager
def decoding(refusal: str = "malformed body, nothing appended") -> Iterator[None]:
    """Refuse a body that does not decode: an error decoding it in the block is Malformed,
    its message after ``refusal``."""
    try:
        yield
    except (ValueError, msgpack.UnpackException) as problem:
        raise Malformed(f"{refusal}: {problem}") from None
    except RecursionError:  # JSON nested thousands deep
        raise Malformed(f"{refusal}: nested too deeply") from None


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes ``limit``, whatever it announced.

    Bodies being received at once share a memory budget: past it, 503 (overload) instead of
    holding them all.
    """
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(limit)
    service = service_of(request)
    budget = service.limits.max_receiving_bytes
    announced = request.content_length or 0
    if service.receiving_bytes and service.receiving_bytes + announced > budget:
        raise Unavailable("overloaded: too many bodies being received", 2)
    pieces: list[bytes] = []
    received = 0
    service.receiving_bytes += announced
    try:
        async for piece in request.content.iter_chunked(1 << 18):
            pieces.append(piece)
            received += len(piece)
            if received > limit:
                raise TooLarge(limit)
            if received > announced:  # a chunked body: count it as it grows
                service.receiving_bytes += received - announced
                announced = received
                if service.receiving_bytes > budget and service.receiving_bytes > announced:
                    raise Unavailable("overloaded: too many bodies being received", 2)
    finally:
        service.receiving_bytes -= announced
    # One copy into the final bytes, instead of growing a bytearray and copying it again.
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


async def body_pieces(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The body in pieces, for uploads streamed to disk; TooLarge past ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(limit)
    async for piece in at_most(limit, request.content.iter_chunked(1 << 20)):
        yield piece


async def at_most(limit: int, pieces: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``pieces`` as they come, refusing (TooLarge) as soon as they pass ``limit`` bytes."""
    total = 0
    async for piece in pieces:
        total += len(piece)
        if total > limit:
            raise TooLarge(limit)
        yield piece
