"""The stream API: listings, byte-range and entry reads, manual append and upload.

* ``GET /api/streams`` and ``GET /api/streams/<name>``: JSON listings with statistics;
* ``GET|HEAD /api/streams/<name>/data``: the stored bytes, whole or by ``Range``;
* ``GET /api/streams/<name>/entries?start=&stop=&since=&until=&limit=&format=``: entries by
  index or time, as msgpack (default) or JSON, paged with the ``X-Next-Start`` header;
* ``POST /api/streams/<name>/append``: entries (msgpack or JSON) or raw bytes, by stream kind;
* ``PUT /api/streams/<name>``: upload a new raw byte stream, streamed to disk.
"""

import base64
import json
import math
import re

import msgpack
from aiohttp import web

from kiln.wendelin import chunks, eventtime
from kiln.wendelin.httputil import (
    BodyTooLarge,
    Failure,
    body_pieces,
    error,
    read_body,
    require_account,
    service_of,
    too_large,
    unavailable,
)
from kiln.wendelin.ingest import TagRejected, stream_for
from kiln.wendelin.service import Account
from kiln.wendelin.streams import ENTRIES, RAW, Stream, StreamKindError, StreamUnavailable

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)\Z")
MAX_ENTRIES_PER_PAGE = 100_000


def describe(stream: Stream) -> dict[str, object]:
    stats = stream.stats

    def optional(value: float) -> float | None:
        return None if math.isnan(value) else value

    return {
        "name": stream.name,
        "policy": stream.policy,
        "kind": stream.kind,
        "size": stats.size,
        "entries": stats.entries,
        "chunks": stats.chunks,
        "commits": stats.commits,
        "first_time": optional(stats.first_time),
        "last_time": optional(stats.last_time),
        "last_ingest": optional(stats.last_ingest),
    }


def readable_stream(request: web.Request, account: Account) -> Stream:
    stream = service_of(request).store.get(request.match_info["name"])
    if stream is None or not account.may_read(stream):
        raise Failure(error(404, f"no stream named {request.match_info['name']!r}"))
    return stream


async def list_streams(request: web.Request) -> web.Response:
    account = require_account(request)
    streams = service_of(request).readable_streams(account)
    return web.json_response([describe(stream) for stream in streams])


async def show_stream(request: web.Request) -> web.Response:
    return web.json_response(describe(readable_stream(request, require_account(request))))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) for a single-range ``Range`` header; None means the whole stream.

    Raises a 416 answer for a range that cannot be satisfied.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # multi-range or unknown unit: RFC 9110 lets us send the whole thing
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size
    else:
        start = int(first)
        end = size if last == "" else min(int(last) + 1, size)
    if start >= size or start >= end:
        message = f"range not satisfiable for {size} bytes"
        raise Failure(error(416, message, **{"Content-Range": f"bytes */{size}"}))
    return start, end


async def stream_data(request: web.Request) -> web.StreamResponse:
    stream = readable_stream(request, require_account(request))
    size = stream.stats.size  # a commit during the answer does not change what we promised
    byte_range = parse_range(request.headers.get("Range"), size)
    headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    if byte_range is None:
        start, end, status = 0, size, 200
        headers["Content-Disposition"] = f'attachment; filename="{stream.name}"'
    else:
        (start, end), status = byte_range, 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if request.method != "HEAD":
        for piece in stream.iter_bytes(start, end):
            await response.write(piece)
    await response.write_eof()
    return response


def _number(request: web.Request, name: str, kind: type = int) -> float | int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        raise Failure(error(400, f"?{name}= must be a number")) from None


async def stream_entries(request: web.Request) -> web.Response:
    stream = readable_stream(request, require_account(request))
    start = _number(request, "start") or 0
    stop = _number(request, "stop")
    since = _number(request, "since", float)
    until = _number(request, "until", float)
    limit = min(_number(request, "limit") or 10_000, MAX_ENTRIES_PER_PAGE)
    if start < 0:  # negative start counts from the end, for "latest entries"
        start = max(stream.stats.entries + start, 0)
    try:
        data, next_start = stream.scan_entries(
            int(start),
            None if stop is None else int(stop),
            -math.inf if since is None else since,
            math.inf if until is None else until,
            int(limit),
        )
    except StreamKindError as problem:
        return error(409, str(problem))
    headers = {} if next_start is None else {"X-Next-Start": str(next_start)}
    if request.query.get("format") == "json":
        entries = [to_json_entry(entry) for entry in chunks.iter_entries(data)]
        return web.json_response(entries, headers=headers)
    return web.Response(body=data, content_type="application/msgpack", headers=headers)


def to_json_entry(entry: list) -> list:
    """``[seconds, record]`` with bytes shown as text when they are UTF-8, else base64."""
    seconds = eventtime.to_seconds(entry[0])
    return [seconds, _jsonable(entry[1])]


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(_jsonable(key)): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "base64": base64.b64encode(value.data).decode()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def writable_stream(request: web.Request, account: Account) -> Stream:
    stream = readable_stream(request, account)
    if not account.may_write(stream):
        message = f"only policy {stream.policy} may write to stream {stream.name}"
        raise Failure(error(403, message))
    return stream


def entries_from_body(body: bytes, content_type: str) -> chunks.Chunk:
    """msgpack ``[time, record]`` entries, or JSON ``{"time": t, "record": {...}}`` / a list."""
    if content_type in ("application/json", "application/x-ndjson"):
        items = [json.loads(line) for line in body.splitlines() if line.strip()]
        if len(items) == 1 and isinstance(items[0], list):
            items = items[0]
        entries = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("record"), dict):
                raise chunks.ChunkError('each JSON entry must be {"time": t, "record": {...}}')
            entries.append([eventtime.pack(float(item.get("time", 0))), item["record"]])
        return chunks.pack_entries(entries)
    return chunks.parse_entries(body)


async def append(request: web.Request) -> web.Response:
    service = service_of(request)
    if service.shutting_down:
        return unavailable("shutting down", 10)
    stream = writable_stream(request, require_account(request))
    try:
        if stream.kind == RAW:
            limit = service.limits.max_upload_bytes
            await stream.append_raw(body_pieces(request, limit))
        else:
            limit = service.limits.max_chunk_bytes
            chunk = entries_from_body(await read_body(request, limit), request.content_type)
            await stream.append(chunk)
    except BodyTooLarge:
        return too_large(limit)
    except (chunks.ChunkError, ValueError) as problem:
        return error(400, f"malformed body, nothing appended: {problem}")
    except StreamUnavailable as problem:
        return unavailable(problem)
    return web.json_response(describe(stream))


async def upload(request: web.Request) -> web.Response:
    """Create a raw byte stream from the body (a file, as Wendelin's Data Stream upload)."""
    service = service_of(request)
    if service.shutting_down:
        return unavailable("shutting down", 10)
    account = require_account(request)
    if account.policy is None:
        return error(403, "upload with a policy's credentials: readers cannot write")
    name = request.match_info["name"]
    if service.store.get(name) is not None:
        return error(409, f"stream {name!r} exists; POST to /api/streams/{name}/append")
    limit = service.limits.max_upload_bytes
    try:
        stream = stream_for(service.store, account.policy, name, RAW)
        await stream.append_raw(body_pieces(request, limit))
    except TagRejected as problem:
        return error(403, str(problem))
    except BodyTooLarge:
        return too_large(limit)
    except StreamUnavailable as problem:
        return unavailable(problem)
    return web.json_response(describe(stream), status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/streams", list_streams)
    app.router.add_get("/api/streams/{name}", show_stream)
    app.router.add_put("/api/streams/{name}", upload)
    app.router.add_get("/api/streams/{name}/data", stream_data)  # GET also answers HEAD
    app.router.add_get("/api/streams/{name}/entries", stream_entries)
    app.router.add_post("/api/streams/{name}/append", append)


__all__ = ["ENTRIES", "add_routes", "describe"]
