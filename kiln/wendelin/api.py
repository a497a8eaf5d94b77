"""The stream API's reads: listings, byte ranges and entries. Its writes, manual append and
upload, are an input (``inputs.stream_api``).

* ``GET /api/streams`` and ``GET /api/streams/<name>``: JSON listings with statistics;
* ``GET|HEAD /api/streams/<name>/data``: the stored bytes, whole or by ``Range``;
* ``GET /api/streams/<name>/entries?start=&stop=&since=&until=&limit=&format=``: entries by
  index or time, as msgpack (default) or JSON, paged with the ``X-Next-Start`` header;
* ``GET /api/streams/<name>/series?since=&until=&buckets=``: min, max and mean per time
  bucket of each numeric field (``series.downsample``), for the charts.
"""

import base64
import json
import math
import re

import msgpack
from aiohttp import web

from kiln.wendelin import chunks, eventtime, series
from kiln.wendelin.httputil import Failure, error, readable_stream, require_account, service_of
from kiln.wendelin.stream_reader import ENTRIES, StreamKindError, StreamReader

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)\Z")
DEFAULT_ENTRIES_PER_PAGE = 10_000
# Converting is recursive (here, in json, in the page's template): well within Python's limit.
_MAX_SHOWN_DEPTH = 400


def describe(stream: StreamReader) -> dict[str, object]:
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
    service = service_of(request)
    page = service.limits.max_page_entries  # larger pages are cut there, with X-Next-Start
    limit = max(min(_number(request, "limit") or DEFAULT_ENTRIES_PER_PAGE, page), 1)
    if start < 0:  # negative start counts from the end, for "latest entries"
        start = max(stream.stats.entries + start, 0)
    as_json = request.query.get("format") == "json"

    def page_of_entries() -> tuple[bytes, int | None]:
        data, next_start = stream.scan_entries(  # StreamKindError (409) for a raw stream
            int(start),
            None if stop is None else int(stop),
            -math.inf if since is None else since,
            math.inf if until is None else until,
            int(limit),
        )
        if as_json:
            entries = [to_json_entry(entry) for entry in chunks.iter_entries(data)]
            return json.dumps(entries).encode(), next_start
        return data, next_start

    # Reading and converting 100,000 entries takes seconds of CPU: in the conversion pool
    # (503 when full), so that the event loop keeps serving ingest and health checks.
    body, next_start = await service.off_loop(service.conversions, page_of_entries)
    headers = {} if next_start is None else {"X-Next-Start": str(next_start)}
    kind = "application/json" if as_json else "application/msgpack"
    return web.Response(body=body, content_type=kind, headers=headers)


DEFAULT_SERIES_BUCKETS = 1_000


async def stream_series(request: web.Request) -> web.Response:
    """Downsampled numeric fields of an entry stream over [since, until) (default: all of it).

    ``buckets`` above ``--max-series-buckets`` is lowered to it; the answer says how many it
    used. At most ``--max-series-entries`` entries are read (``complete`` false past them).
    """
    stream = readable_stream(request, require_account(request))
    if stream.kind != ENTRIES:
        raise StreamKindError(f"stream {stream.name} holds raw bytes: it has no series")
    service = service_of(request)
    limits = service.limits
    asked = _number(request, "buckets")
    buckets = DEFAULT_SERIES_BUCKETS if asked is None else int(asked)
    buckets = min(buckets, limits.max_series_buckets)
    since = _number(request, "since", float)
    until = _number(request, "until", float)
    whole = series.default_window(stream)
    if whole is None and (since is None or until is None):
        # No entry has a time yet: nothing to plot, and no window to default to.
        return web.json_response(
            {
                "stream": stream.name,
                "entries": 0,
                "complete": True,
                "time": [],
                "count": [],
                "fields": {},
            }
        )
    if whole is not None:
        since = whole[0] if since is None else since
        until = whole[1] if until is None else until
    assert since is not None and until is not None
    series.check_window(since, until, buckets)  # a 400 before taking a worker
    answer = await service.off_loop(
        service.conversions,
        series.downsample,
        stream,
        since,
        until,
        buckets,
        limits.max_series_entries,
    )
    return web.json_response(answer)


def to_json_entry(entry: list) -> list:
    """``[seconds, record]`` with bytes shown as text when they are UTF-8, else base64.

    A record stored before --max-record-depth existed may nest too deeply to convert: it
    is shown as a note, so that one record cannot make its stream's pages fail.
    """
    seconds = eventtime.to_seconds(entry[0])
    if chunks.deeper_than(entry[1], _MAX_SHOWN_DEPTH):  # checked without recursion
        return [seconds, {"_wendelin": "record nested too deeply to show; read it as msgpack"}]
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


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/streams", list_streams)
    app.router.add_get("/api/streams/{name}", show_stream)
    app.router.add_get("/api/streams/{name}/data", stream_data)  # GET also answers HEAD
    app.router.add_get("/api/streams/{name}/entries", stream_entries)
    app.router.add_get("/api/streams/{name}/series", stream_series)
