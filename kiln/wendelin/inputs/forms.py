"""The web pages' forms: append to a stream, upload a file as a new one; emitted to the router.

A form post must come from this origin, so another site cannot make a logged-in browser
write; a form that worked redirects (303) to the stream's page.
"""

import json
import time
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, MultipartReader, web
from multidict import MultiDictProxy

from kiln.wendelin import chunks, eventtime
from kiln.wendelin.httputil import (
    SAME,
    Failure,
    at_most,
    decoding,
    error,
    origin_of,
    require_account,
    service_of,
    writable_stream,
)
from kiln.wendelin.refusals import Malformed
from kiln.wendelin.service import Account
from kiln.wendelin.stream_reader import RAW


def _sender(request: web.Request) -> Account:
    """Who posts the form, if a browser says it comes from a page of this site (403 if not).

    Cross-site posts are refused for every route by ``httputil.same_origin``; a form also
    needs the browser's word that it is same-origin, since only a browser posts it and
    every current browser sends ``Origin`` or ``Sec-Fetch-Site`` with a form post.
    """
    if origin_of(request) != SAME:
        raise Failure(
            error(403, "a form must be posted from this site's pages (no same-origin Origin)")
        )
    return require_account(request)


async def append_form(request: web.Request) -> web.StreamResponse:
    service = service_of(request)
    stream, policy = writable_stream(request, _sender(request))
    if stream.kind == RAW:
        part = await _file_part(await request.multipart())
        pieces = at_most(service.limits.max_upload_bytes, _pieces(part))
        await service.router.emit_raw(policy, stream.name, pieces)
    else:
        await service.router.emit(
            policy, stream.name, _entry_of(await request.post(), service.limits.max_record_depth)
        )
    raise web.HTTPSeeOther(f"/streams/{stream.name}")


def _entry_of(form: MultiDictProxy, max_depth: int) -> chunks.Chunk:
    """The form's JSON record as one entry, timestamped now."""
    with decoding("nothing appended"):
        record = json.loads(str(form.get("record", "")))
        if isinstance(record, dict):
            return chunks.pack_entries([[eventtime.pack(time.time()), record]], max_depth)
    raise Malformed("the record must be a JSON object")


async def upload_form(request: web.Request) -> web.StreamResponse:
    service = service_of(request)
    account = _sender(request)
    if account.policy is None:
        return error(403, "readers cannot upload")
    reader = await request.multipart()
    name_part = await reader.next()
    if not isinstance(name_part, BodyPartReader) or name_part.name != "name":
        return error(400, "the form must send the stream name first")
    name = (await name_part.text()).strip()
    pieces = at_most(service.limits.max_upload_bytes, _pieces(await _file_part(reader)))
    await service.router.emit_raw(account.policy, name, pieces, new=True)
    raise web.HTTPSeeOther(f"/streams/{name}")


async def _file_part(reader: MultipartReader) -> BodyPartReader:
    """The form's ``file`` field; the parts before it are skipped."""
    async for part in reader:
        if isinstance(part, BodyPartReader) and part.name == "file":
            return part
    raise Malformed("nothing appended: the form has no file")


async def _pieces(part: BodyPartReader) -> AsyncIterator[bytes]:
    while piece := await part.read_chunk(1 << 20):
        yield piece


def add_routes(app: web.Application) -> None:
    app.router.add_post("/streams/{name}/append", append_form)
    app.router.add_post("/upload", upload_form)
