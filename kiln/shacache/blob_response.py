"""Answer GET and HEAD of a blob from an open file, with ``Range`` (what clients resume with).

aiohttp's FileResponse takes a path, but a BlobStore hands out an open file so that stores
without paths (an object store) are served the same way.  A real file still goes out by
sendfile(); asyncio reads and sends any other file in pieces.
"""

from __future__ import annotations

import asyncio
import os
from typing import BinaryIO

from aiohttp import web

HEADERS = {
    "Content-Type": "application/octet-stream",
    "Accept-Ranges": "bytes",
    # A blob never changes: it is named by its sha512.
    "Cache-Control": "public, max-age=31536000, immutable",
}


def _size(blob: BinaryIO) -> int:
    size = blob.seek(0, os.SEEK_END)
    # Back to the start: asyncio's sendfile fallback (TLS, files without a descriptor) seeks
    # only to a non-zero offset, and reads from where the file is.
    blob.seek(0)
    return size


def _wanted(request: web.BaseRequest, size: int) -> tuple[int, int] | None:
    """(first byte, byte count) of a ``Range`` request, None without one.

    Raises ValueError for a range that is malformed or starts past the end (answer 416).
    """
    window = request.http_range  # one `bytes=` range as a slice; ValueError when malformed
    if window.start is None:
        return None
    if window.start < 0:  # `bytes=-N`: the last N bytes
        start = max(size + window.start, 0)
        return start, size - start
    if window.start >= size:
        raise ValueError("the range starts past the end")
    stop = size if window.stop is None else min(window.stop, size)
    return window.start, stop - window.start


async def blob_response(
    request: web.BaseRequest, blob: BinaryIO, sha512: str
) -> web.StreamResponse:
    """Send ``blob`` (or the range asked for); the caller closes it afterwards."""
    # The name is the content: a strong ETag that no other blob can have.
    response = web.StreamResponse(headers={**HEADERS, "ETag": f'"{sha512}"'})
    if any(tag.value in (sha512, "*") for tag in request.if_none_match or ()):
        response.set_status(304)
        await response.prepare(request)
        return response
    loop = asyncio.get_running_loop()
    size = await loop.run_in_executor(None, _size, blob)
    try:
        wanted = _wanted(request, size)
    except ValueError:
        response.set_status(416)
        response.headers["Content-Range"] = f"bytes */{size}"
        response.content_length = 0
        await response.prepare(request)
        return response
    start, count = wanted or (0, size)
    if wanted is not None:
        response.set_status(206)
        response.headers["Content-Range"] = f"bytes {start}-{start + count - 1}/{size}"
    response.content_length = count
    await response.prepare(request)
    if request.method != "HEAD" and count:
        if request.transport is None:
            raise ConnectionResetError("the client went away")
        await loop.sendfile(request.transport, blob, start, count)
    await response.write_eof()
    return response
