"""HTTP ingest: fluent-plugin-wendelin's protocol, and an in_http-style endpoint for curl.

fluent-plugin-wendelin (docs/protocols/wendelin-http.md):
``POST /ingestion_policies/<policy>/ingest?reference=<tag>``, also served under Wendelin's
``/erp5/portal_ingestion_policies/<policy>/ingest`` so existing ``streamtool_uri`` settings
work. Unlike Wendelin, a byte-identical resend is not appended twice, timestamps are kept, and
a tag the policy does not take is refused (403) instead of dropped with a 200.
"""

import functools
import hashlib
import json
import time
import urllib.parse

import msgpack
from aiohttp import web

from kiln.wendelin import chunks
from kiln.wendelin.httputil import (
    decoding,
    error,
    read_body,
    require_content_type,
    service_of,
    unauthorized,
)
from kiln.wendelin.policies import Policy
from kiln.wendelin.record_time import stamp_records
from kiln.wendelin.refusals import Malformed
from kiln.wendelin.service import Service

FORM = "application/x-www-form-urlencoded"
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack")
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl")
# fluent-plugin-wendelin sends no Content-Type, which Ruby's Net::HTTP labels a form; older
# versions and embulk send real forms (data_chunk=); curl --data-binary sends a form too.
# ndjson is listed for out_http pointed at this URL (its chunk check names the problem).
CHUNK_TYPES = (FORM, "application/octet-stream", *MSGPACK_TYPES, *NDJSON_TYPES)
# fluentd's out_http: json, ndjson, msgpack; in_http-style forms (json= or msgpack=).
RECORD_TYPES = ("application/json", *NDJSON_TYPES, *MSGPACK_TYPES, FORM)


async def fluentd_ingest(request: web.Request) -> web.StreamResponse:
    service = service_of(request)
    service.router.refuse_if_closing()
    name = request.match_info["policy"]
    account = service.authenticate(request)
    # One answer for an unknown policy and for one the credentials are not for: which
    # policies exist is not told to whoever asks.
    if account is None or account.policy is None or account.policy.name != name:
        return unauthorized(
            f"wrong or missing credentials for policy {name!r} (or no such policy): "
            "send that policy's HTTP user and password"
        )
    policy = account.policy
    tag = request.query.get("reference")
    if not tag:
        return error(400, "missing ?reference=<tag>")
    require_content_type(request, CHUNK_TYPES)
    body = await read_body(request, service.limits.max_chunk_bytes)
    depth = service.limits.max_record_depth
    if request.content_type in OUT_HTTP_TYPES:
        return await _ingest_records(service, policy, tag, body, request.content_type)
    data = _data_of_form(body) if _is_form(body) else body
    parse = functools.partial(_entries_of_chunk, max_depth=depth)
    return _stored(await service.router.emit_unparsed(policy, tag, data, parse))


# What fluentd's out_http sends to a policy's ingest URL (<format> json: ndjson; msgpack:
# records in a row), as opposed to fluent-plugin-wendelin's raw chunk of [time, record]
# entries (no Content-Type, or octet-stream).
OUT_HTTP_TYPES = (*NDJSON_TYPES, "application/x-msgpack")


async def _ingest_records(
    service: Service, policy: Policy, tag: str, body: bytes, content_type: str
) -> web.Response:
    """out_http pointed at a policy's ingest URL: records timed by their ``time`` key, as on
    ``/tags``, or else by their arrival.

    out_http resends a chunk byte for byte until it gets a 2xx, so the body's hash is the
    chunk's id: a resend is acknowledged without a second copy (the arrival time of records
    without a time of their own is the first copy's).
    """
    chunk = _records_chunk(service, body, content_type, None)
    chunk_id = hashlib.sha256(b"http-records\0" + tag.encode() + b"\0" + body).digest()
    return _stored(await service.router.emit(policy, tag, chunk, chunk_id))


def _records_chunk(
    service: Service, body: bytes, content_type: str, query_time: str | None
) -> chunks.Chunk:
    """The records of an in_http-style body as checked entries, each with its event time
    (record_time.stamp_records: ``?time=``, the record's time key, or the arrival time)."""
    limits = service.limits
    with decoding():
        records = _decode_records(body, content_type)
        entries = stamp_records(records, time.time(), limits.time_key, query_time)
        return chunks.pack_entries(entries, limits.max_record_depth)


def _data_of_form(body: bytes) -> bytes:
    """fluent-plugin-wendelin up to 0.4 and embulk post ``data_chunk=<url-encoded bytes>``."""
    try:
        return form_field(body, "data_chunk")
    except ValueError as problem:  # UnicodeDecodeError included
        raise Malformed(f"malformed form body, nothing appended: {problem}") from None


def _entries_of_chunk(data: bytes, max_depth: int) -> chunks.Chunk:
    """The entries of a fluentd chunk; ChunkError names the problem."""
    try:
        return chunks.parse_entries(data, max_depth)
    except chunks.ChunkError as problem:
        raise chunks.ChunkError(f"malformed chunk, nothing appended: {problem}") from None


def form_field(body: bytes, name: str) -> bytes:
    """The bytes of one url-encoded form field (latin-1 maps each escaped byte to itself)."""
    fields = urllib.parse.parse_qs(
        body.decode("ascii"), keep_blank_values=True, strict_parsing=True, encoding="latin-1"
    )
    if name not in fields:
        raise ValueError(f"form body without a {name} field")
    return fields[name][0].encode("latin-1")


def _is_form(body: bytes) -> bool:
    """Decided by the body, not the Content-Type: Ruby's Net::HTTP labels any body as a form.

    A raw chunk starts with a msgpack array marker, which no form body does.
    """
    starts_as_array = bool(body) and (0x90 <= body[0] <= 0x9F or body[0] in (0xDC, 0xDD))
    return not starts_as_array and b"data_chunk=" in body


def _stored(appended: bool) -> web.Response:
    """204 once durable, also for a retry already stored (which says so)."""
    headers = {} if appended else {"X-Wendelin-Duplicate": "already stored"}
    return web.Response(status=204, headers=headers)


async def tag_ingest(request: web.Request) -> web.StreamResponse:
    """``POST /tags/<tag>``, like fluentd's in_http: JSON, ndjson or msgpack records.

    The policy is the one whose HTTP user authenticates. A record's event time is
    ``?time=<unix seconds>`` if given, else its own ``time`` key (removed from it), else the
    arrival time: fluentd's rules, in record_time.py.
    """
    service = service_of(request)
    service.router.refuse_if_closing()
    account = service.authenticate(request)
    if account is None or account.policy is None:
        return unauthorized("send with a policy's HTTP user and password")
    require_content_type(request, RECORD_TYPES)
    body = await read_body(request, service.limits.max_chunk_bytes)
    chunk = _records_chunk(service, body, request.content_type, request.query.get("time"))
    tag = request.match_info["tag"]
    return _stored(await service.router.emit(account.policy, tag, chunk))


def _decode_records(body: bytes, content_type: str) -> list[object]:
    if content_type == FORM:  # in_http's json=... or msgpack=... form fields
        if b"json=" in body:
            return _as_records(json.loads(form_field(body, "json")))
        if b"msgpack=" in body:
            return _msgpack_records(form_field(body, "msgpack"))
        raise ValueError("form body needs a json= or msgpack= field")
    if content_type in MSGPACK_TYPES:
        return _msgpack_records(body)
    if content_type in NDJSON_TYPES:
        return [json.loads(line) for line in body.splitlines() if line.strip()]
    return _as_records(json.loads(body))


def _msgpack_records(body: bytes) -> list[object]:
    """Records of one msgpack value or of several in a row, as fluentd's out_http sends
    with ``<format> @type msgpack``: the records of a chunk, one after the other."""
    unpacker = msgpack.Unpacker(strict_map_key=False, max_buffer_size=max(len(body), 1))
    unpacker.feed(body)
    records: list[object] = []
    complete = 0  # tell() after a failed read counts the incomplete value's bytes too
    for value in unpacker:
        records.extend(_as_records(value))
        complete = unpacker.tell()
    if complete != len(body):
        raise ValueError(f"truncated msgpack: {len(body) - complete} bytes left over")
    return records


def _as_records(value: object) -> list[object]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise ValueError("send a record (a map) or an array of records")


def add_routes(app: web.Application) -> None:
    for prefix in ("/ingestion_policies", "/erp5/portal_ingestion_policies"):
        app.router.add_post(prefix + "/{policy}/ingest", fluentd_ingest)
        # Wendelin answers 400 to anything but POST; so do we, with a message.
        app.router.add_route(
            "*",
            prefix + "/{policy}/ingest",
            lambda request: error(400, "ingest takes POST only"),
        )
    app.router.add_post("/tags/{tag}", tag_ingest)
