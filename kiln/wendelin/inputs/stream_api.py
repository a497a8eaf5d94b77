"""The stream API's writes: manual append and upload, emitted to the router.

* ``POST /api/streams/<name>/append``: entries (msgpack, or JSON ``{"time": t, "record":
  {...}}`` and lists of them) for an entry stream, raw bytes for a raw one;
* ``PUT /api/streams/<name>``: upload a new raw byte stream, streamed to disk.
"""

import json

from aiohttp import web

from kiln.wendelin import chunks, eventtime
from kiln.wendelin.api import describe
from kiln.wendelin.httputil import (
    body_pieces,
    decoding,
    error,
    read_body,
    require_account,
    require_content_type,
    service_of,
    writable_stream,
)
from kiln.wendelin.stream_reader import RAW

ENTRY_TYPES = (
    "application/json",
    "application/x-ndjson",
    "application/msgpack",
    "application/x-msgpack",
    "application/octet-stream",
)


def entries_from_body(body: bytes, content_type: str, max_depth: int) -> chunks.Chunk:
    """msgpack ``[time, record]`` entries, or JSON ``{"time": t, "record": {...}}`` / a list."""
    if content_type in ("application/json", "application/x-ndjson"):
        items = [json.loads(line) for line in body.splitlines() if line.strip()]
        if len(items) == 1 and isinstance(items[0], list):
            items = items[0]
        entries = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("record"), dict):
                raise chunks.ChunkError('each JSON entry must be {"time": t, "record": {...}}')
            entries.append([eventtime.pack(item.get("time", 0)), item["record"]])
        return chunks.pack_entries(entries, max_depth)
    return chunks.parse_entries(body, max_depth)


async def append(request: web.Request) -> web.Response:
    service = service_of(request)
    service.router.refuse_if_closing()
    stream, policy = writable_stream(request, require_account(request))
    if stream.kind == RAW:
        pieces = body_pieces(request, service.limits.max_upload_bytes)
        await service.router.emit_raw(policy, stream.name, pieces)
    else:
        require_content_type(request, ENTRY_TYPES)
        body = await read_body(request, service.limits.max_chunk_bytes)
        with decoding():
            chunk = entries_from_body(body, request.content_type, service.limits.max_record_depth)
        await service.router.emit(policy, stream.name, chunk)
    return web.json_response(describe(stream))


async def upload(request: web.Request) -> web.Response:
    """Create a raw byte stream from the body (a file, as Wendelin's Data Stream upload)."""
    service = service_of(request)
    service.router.refuse_if_closing()
    account = require_account(request)
    if account.policy is None:
        return error(403, "upload with a policy's credentials: readers cannot write")
    name = request.match_info["name"]
    pieces = body_pieces(request, service.limits.max_upload_bytes)
    await service.router.emit_raw(account.policy, name, pieces, new=True)
    stream = service.streams.get(name)
    assert stream is not None  # just created, and streams are never removed
    return web.json_response(describe(stream), status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_put("/api/streams/{name}", upload)
    app.router.add_post("/api/streams/{name}/append", append)
