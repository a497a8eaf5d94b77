"""Small helpers shared by the HTTP handlers: keys, error answers, bounded body reading."""

from collections.abc import AsyncIterator

from aiohttp import web

from kiln.common.http import error
from kiln.wendelin.service import Account, Service
from kiln.wendelin.streams import StreamUnavailable

SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
REALM = 'Basic realm="wendelin"'


def service_of(request: web.Request) -> Service:
    return request.app[SERVICE]


class Failure(Exception):
    """Raised from deep in a handler; the middleware answers with ``response``."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


@web.middleware
async def failures(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Failure as failure:
        return failure.response


@web.middleware
async def credentials(request: web.Request, handler) -> web.StreamResponse:
    """Check Basic credentials off the event loop first, so handlers only look them up."""
    await service_of(request).verify_credentials(request)
    return await handler(request)


def unavailable(reason: StreamUnavailable | str, retry_after: int = 5) -> web.Response:
    if isinstance(reason, StreamUnavailable):
        retry_after = reason.retry_after
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


class BodyTooLarge(Exception):
    pass


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes ``limit``, whatever it announced.

    Bodies being received at once share a memory budget: past it, 503 (overload) instead of
    holding them all.
    """
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge()
    service = service_of(request)
    budget = service.limits.max_receiving_bytes
    announced = request.content_length or 0
    if service.receiving_bytes and service.receiving_bytes + announced > budget:
        raise Failure(unavailable("overloaded: too many bodies being received", 2))
    pieces: list[bytes] = []
    received = 0
    service.receiving_bytes += announced
    try:
        async for piece in request.content.iter_chunked(1 << 18):
            pieces.append(piece)
            received += len(piece)
            if received > limit:
                raise BodyTooLarge()
            if received > announced:  # a chunked body: count it as it grows
                service.receiving_bytes += received - announced
                announced = received
                if service.receiving_bytes > budget and service.receiving_bytes > announced:
                    raise Failure(unavailable("overloaded: too many bodies being received", 2))
    finally:
        service.receiving_bytes -= announced
    # One copy into the final bytes, instead of growing a bytearray and copying it again.
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


async def body_pieces(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The body in pieces, for uploads streamed to disk; BodyTooLarge past ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge()
    total = 0
    async for piece in request.content.iter_chunked(1 << 20):
        total += len(piece)
        if total > limit:
            raise BodyTooLarge()
        yield piece


def too_large(limit: int) -> web.Response:
    return error(413, f"body larger than the limit of {limit} bytes")
