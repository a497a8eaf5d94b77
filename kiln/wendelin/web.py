"""Web pages on the same server: policies, streams and arrays, and one page per stream.

Server-rendered HTML behind the same HTTP Basic accounts as the API; everything but the
charts works without script. The charts are dygraphs (``static/charts.js``), which fetch
downsampled windows from the API as the user zooms. The pages only read; their forms post to
an input (``inputs.forms``), which redirects (303) back to the stream page.
"""

import datetime
import html
import json
import math
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from kiln.wendelin import chunks
from kiln.wendelin.api import describe, to_json_entry
from kiln.wendelin.arrays.basics import PYRAMID_KINDS, UnknownArray
from kiln.wendelin.httputil import readable_stream, require_account, service_of
from kiln.wendelin.service import Account, Service
from kiln.wendelin.static import MISSING_DYGRAPHS, STATIC
from kiln.wendelin.stream_reader import RAW, StreamReader
from kiln.wendelin.transform import web as transform_web

if TYPE_CHECKING:
    from kiln.wendelin.arrays.store import DataArray

LATEST_ENTRIES = 50
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35em .7em; border-bottom: 1px solid #ddd; }
th { background: #f3f5f7; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { font-family: ui-monospace, monospace; font-size: .9em; }
pre { margin: 0; white-space: pre-wrap; word-break: break-all; }
form { margin: .6em 0; padding: .8em; background: #f7f7f9; border: 1px solid #e3e3e8; }
.muted { color: #777; } nav a { margin-right: 1em; }
.chart { margin: .4em 0 1.2em; } .chart-plot { width: 100%; }
.chart-legend { min-height: 1.4em; font-size: .85em; color: #444; }
.chart-note { color: #777; font-size: .9em; }
"""
# The charts' scripts: dygraphs from its npm package, then ours (no inline script: the CSP
# allows scripts from this server only).
_CHART_HEAD = (
    "<link rel=stylesheet href='/static/dygraphs/dygraph.min.css'>"
    "<script src='/static/dygraphs/dygraph.min.js' defer></script>"
    "<script src='/static/charts.js' defer></script>"
)


def _page(title: str, body: str, charts: bool = False) -> web.Response:
    text = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<link rel=icon href='data:,'>"  # no icon: no request for /favicon.ico
        f"<title>{html.escape(title)} · wendelin</title><style>{_STYLE}</style>"
        f"{_CHART_HEAD if charts else ''}</head>"
        f"<body><nav><a href='/'>wendelin</a></nav><h1>{html.escape(title)}</h1>{body}"
        "</body></html>"
    )
    return web.Response(text=text, content_type="text/html")


def chart(request: web.Request, kind: str, url: str, **data: str) -> tuple[str, bool]:
    """A chart's placeholder, which ``static/charts.js`` fills, and whether the page needs the
    chart scripts; without dygraphs, the message saying how to install it."""
    if not request.app[STATIC].has_dygraphs:
        return f"<p class=chart-note>{MISSING_DYGRAPHS}</p>", False
    attributes = "".join(
        f" data-{key}='{html.escape(value, quote=True)}'" for key, value in data.items()
    )
    return (
        f"<div class=charts data-kind={kind} data-url='{html.escape(url, quote=True)}'"
        f"{attributes}><p class=chart-note>Loading the chart…</p></div>"
        "<noscript><p class=chart-note>The chart needs JavaScript.</p></noscript>",
        True,
    )


def _when(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "<span class=muted>never</span>"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(count)


async def index(request: web.Request) -> web.Response:
    service = service_of(request)
    account = require_account(request)
    streams = service.readable_streams(account)
    policies = [
        policy
        for policy in service.policies.all()
        if account.policy is None or policy.name == account.policy.name
    ]
    rows = []
    for policy in policies:
        owned = [stream for stream in streams if stream.policy == policy.name]
        last = max((stream.stats.last_ingest for stream in owned), default=math.nan, key=_key)
        rows.append(
            f"<tr><td>{html.escape(policy.name)}</td>"
            f"<td><code>{html.escape(policy.record.tag_pattern)}</code></td>"
            f"<td class=n>{len(owned)}</td>"
            f"<td class=n>{_size(sum(stream.stats.size for stream in owned))}</td>"
            f"<td class=n>{sum(stream.stats.entries for stream in owned)}</td>"
            f"<td>{_when(last)}</td></tr>"
        )
    stream_rows = [
        f"<tr><td><a href='/streams/{html.escape(stream.name)}'>{html.escape(stream.name)}</a>"
        f"</td><td>{html.escape(stream.policy)}</td><td>{stream.kind}</td>"
        f"<td class=n>{_size(stream.stats.size)}</td><td class=n>{stream.stats.entries}</td>"
        f"<td>{_when(stream.stats.first_time)}</td><td>{_when(stream.stats.last_time)}</td>"
        f"<td>{_when(stream.stats.last_ingest)}</td></tr>"
        for stream in streams
    ]
    upload = ""
    if account.policy is not None:
        upload = (
            "<h2>Upload a file as a new raw stream</h2>"
            "<form method=post action='/upload' enctype='multipart/form-data'>"
            "<label>Stream name <input name=name required></label> "
            "<input type=file name=file required> <button>Upload</button></form>"
        )
    body = (
        "<h2>Ingestion policies</h2><table><tr><th>policy</th><th>tag pattern</th>"
        "<th>streams</th><th>size</th><th>entries</th><th>last ingest</th></tr>"
        + "".join(rows)
        + "</table><h2>Data streams</h2><table><tr><th>stream</th><th>policy</th><th>kind</th>"
        "<th>size</th><th>entries</th><th>first time</th><th>last time</th>"
        "<th>last ingest</th></tr>"
        + ("".join(stream_rows) or "<tr><td colspan=8 class=muted>no streams yet</td></tr>")
        + "</table>"
        + _array_table(service, account)
        + transform_web.section(request, account)
        + upload
    )
    return _page("Policies and data streams", body)


def _array_table(service: Service, account: Account) -> str:
    """The data arrays, from the catalog's copy (refreshed on every write and every few
    seconds): listing them from their Zarr metadata would block the event loop."""
    rows = [
        f"<tr><td><a href='/arrays/{html.escape(array.name)}'>{html.escape(array.name)}"
        f"</a></td><td>{html.escape(array.policy or '')}</td><td><code>{array.dtype}</code></td>"
        f"<td class=n>{' × '.join(map(str, array.shape))}</td>"
        f"<td>{html.escape(array.source_stream or '')}</td><td>{_when(array.updated)}</td></tr>"
        for array in service.catalog.arrays()
        if account.policy is None or array.policy == account.policy.name
    ]
    return (
        "<h2>Data arrays</h2><table><tr><th>array</th><th>policy</th><th>dtype</th>"
        "<th>shape</th><th>source stream</th><th>updated</th></tr>"
        + ("".join(rows) or "<tr><td colspan=6 class=muted>no arrays yet</td></tr>")
        + "</table>"
    )


def _key(value: float) -> float:
    return -math.inf if math.isnan(value) else value


async def stream_page(request: web.Request) -> web.Response:
    account = require_account(request)
    stream = readable_stream(request, account)
    info = describe(stream)
    facts = "".join(
        f"<tr><th>{label}</th><td>{value}</td></tr>"
        for label, value in (
            ("policy", html.escape(stream.policy)),
            ("kind", stream.kind),
            ("size", f"{_size(stream.stats.size)} ({stream.stats.size} bytes)"),
            ("entries", stream.stats.entries),
            ("chunks", stream.stats.chunks),
            ("first time", _when(info["first_time"])),  # type: ignore[arg-type]
            ("last time", _when(info["last_time"])),  # type: ignore[arg-type]
            ("last ingest", _when(info["last_ingest"])),  # type: ignore[arg-type]
        )
    )
    name = html.escape(stream.name)
    body = (
        f"<table>{facts}</table><p><a href='/api/streams/{name}/data'>download</a> · "
        f"<a href='/api/streams/{name}/entries?format=json&amp;start=-{LATEST_ENTRIES}'>"
        "latest entries as JSON</a></p>"
    )
    charts = False
    if stream.kind == RAW:
        body += "<p class=muted>A raw byte stream: read it by byte range.</p>"
    else:
        placeholder, charts = chart(request, "stream", f"/api/streams/{quote(stream.name)}/series")
        body += (
            "<h2>Numeric fields over event time</h2>"
            "<p class=muted>Drag across a chart to zoom in (finer data is fetched); "
            f"double-click to zoom out. Times in UTC.</p>{placeholder}"
        )
        # Records can be large: read and convert them off the event loop.
        service = service_of(request)
        body += await service.off_loop(service.conversions, _latest_entries, stream)
    if account.may_write(stream):
        if stream.kind == RAW:
            body += (
                f"<h2>Append a file</h2><form method=post action='/streams/{name}/append' "
                "enctype='multipart/form-data'><input type=file name=file required> "
                "<button>Append</button></form>"
            )
        else:
            body += (
                f"<h2>Append an entry</h2><form method=post action='/streams/{name}/append'>"
                "<label>Record (JSON) <input name=record size=60 value='{\"value\": 1}'>"
                "</label> <button>Append</button> <span class=muted>timestamped now</span>"
                "</form>"
            )
    return _page(f"Stream {stream.name}", body, charts)


def _latest_entries(stream: StreamReader) -> str:
    """The table of a stream's latest entries (runs in a worker thread)."""
    data, _ = stream.scan_entries(max(stream.stats.entries - LATEST_ENTRIES, 0))
    entries = [to_json_entry(entry) for entry in chunks.iter_entries(data)]
    first_number = stream.stats.entries - len(entries)
    rows = "".join(
        f"<tr><td class=n>{first_number + number}</td><td>{_when(seconds)}</td>"
        f"<td><pre>{html.escape(json.dumps(record, ensure_ascii=False))}</pre></td></tr>"
        for number, (seconds, record) in reversed(list(enumerate(entries)))
    )
    return (
        f"<h2>Latest entries</h2><table><tr><th>#</th><th>time</th><th>record</th></tr>"
        f"{rows or '<tr><td colspan=3 class=muted>empty</td></tr>'}</table>"
    )


# Every HTML page: scripts from this server only (files, never inline: the pages hold stream
# data, so an injected script must not run), fetches to this server only, styles inline or
# from here, images from here or data:, forms post here only, never framed; and no Referer
# with stream names elsewhere.
HTML_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response (``on_response_prepare``, so aiohttp's own errors too): nosniff, a
    plain ``Server`` name instead of aiohttp's version banner, and for HTML pages the policy
    above."""
    response.headers["Server"] = "wendelin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.content_type == "text/html":
        response.headers.update(HTML_SECURITY_HEADERS)


MAX_COLUMN_LINKS = 32  # columns of a 2-D array offered as links above its chart


async def array_page(request: web.Request) -> web.Response:
    """An array's metadata, provenance and a zoomable min/max chart of one column."""
    account = require_account(request)
    service = service_of(request)
    name = request.match_info["name"]
    try:
        # Opening reads Zarr metadata from disk: in the array pool, as the API does.
        array = await service.off_loop(service.array_reads, _readable_array, service, account, name)
    except UnknownArray:
        raise web.HTTPNotFound(text=f"no array named {name!r}\n") from None
    column = request.query.get("column", "0")
    columns = array.shape[1] if len(array.shape) == 2 else 1
    if not column.isdigit() or int(column) >= columns:
        raise web.HTTPBadRequest(text=f"?column= must be a column of shape {array.shape}\n")
    quoted = quote(array.name)
    source = array.provenance
    provenance = "<span class=muted>none (written directly)</span>"
    if source is not None:
        stream = html.escape(source.stream)
        provenance = (
            f"stream <a href='/streams/{quote(source.stream)}'>{stream}</a>, "
            f"bytes {source.start}–{source.stop}"
        )
    facts = "".join(
        f"<tr><th>{label}</th><td>{value}</td></tr>"
        for label, value in (
            ("policy", html.escape(array.policy or "") or "<span class=muted>none</span>"),
            ("dtype", f"<code>{html.escape(array.dtype.str)}</code> ({array.dtype.name})"),
            ("shape", " × ".join(map(str, array.shape))),
            ("chunks", " × ".join(map(str, array.chunks))),
            ("source", provenance),
            (
                "attributes",
                f"<pre>{html.escape(json.dumps(array.attributes, indent=1, ensure_ascii=False))}"
                "</pre>",
            ),
        )
    )
    body = (
        f"<table>{facts}</table><p><a href='/api/arrays/{quoted}'>metadata as JSON</a> · "
        f"<a href='/api/arrays/{quoted}/data?slice=0:{min(len(array), 1000)}&amp;format=json'>"
        "first rows as JSON</a> · "
        f"<a href='/api/arrays/{quoted}/data'>download (.npy)</a></p>"
    )
    charts = False
    if array.dtype.kind in PYRAMID_KINDS and len(array.shape) <= 2 and len(array) > 0:
        if columns > 1:
            links = (
                f"<b>{number}</b>"
                if number == int(column)
                else f"<a href='?column={number}'>{number}</a>"
                for number in range(min(columns, MAX_COLUMN_LINKS))
            )
            body += f"<p>Column: {' '.join(links)}</p>"
        placeholder, charts = chart(
            request,
            "array",
            f"/api/arrays/{quoted}/window",
            column=column,
            length=str(len(array)),
        )
        body += (
            "<h2>Values by row</h2><p class=muted>Min and max per bucket, from the array's "
            "pyramid. Drag across the chart to zoom in (finer data is fetched); double-click "
            f"to zoom out.</p>{placeholder}"
        )
    else:
        body += (
            "<p class=muted>No chart: only non-empty integer or float arrays of 1 or 2 "
            "dimensions have one.</p>"
        )
    return _page(f"Array {array.name}", body, charts)


def _readable_array(service: Service, account: Account, name: str) -> "DataArray":
    array = service.arrays.open(name)
    if not account.may_read_array(array):
        raise UnknownArray(name)  # not even its existence
    return array


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/streams/{name}", stream_page)
    app.router.add_get("/arrays/{name}", array_page)
