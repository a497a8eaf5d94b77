"""The data arrays' HTTP API (docs/protocols/wendelin-http.md, "Data arrays").

* ``GET /api/arrays`` and ``GET /api/arrays/<name>``: descriptions (JSON);
* ``GET /api/arrays/<name>/data?slice=0:1000,0&format=npy|json``: a slice;
* ``GET /api/arrays/<name>/window?start=&stop=&buckets=&column=``: min/max per bucket, from
  the array's pyramid, for plotting any length on a screen's width;
* ``PUT /api/arrays/<name>?attributes=<JSON>`` with an ``.npy`` body: create or replace;
* ``POST /api/arrays/<name>/append`` with an ``.npy`` body: append rows, atomically.

Zarr's calls block, so every read and write runs in the service's array pools (503 when
full). Reads need an account that may read the array's policy; writes the policy's own
credentials (cross-site writes are refused by the ``same_origin`` middleware first). A body is
checked whole (dtype, shape, length) before anything is written: bad input changes nothing.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import web

from kiln.wendelin.arrays.store import (
    NUMERIC_KINDS,
    ArrayError,
    DataArray,
    UnknownArray,
    check_new_array,
)
from kiln.wendelin.httputil import (
    Failure,
    error,
    read_body,
    require_account,
    require_content_type,
    service_of,
)
from kiln.wendelin.service import Account, Service

NPY = "application/x-npy"
NPY_TYPES = (NPY, "application/octet-stream")
DEFAULT_BUCKETS = 1000
_MAX_NPY_HEADER = 10_000  # bytes of an .npy header we parse (numpy's own default)


def describe_array(array: DataArray) -> dict[str, object]:
    source = array.provenance
    return {
        "name": array.name,
        "policy": array.policy,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "chunks": list(array.chunks),
        "attributes": array.attributes,
        "source": None
        if source is None
        else {"stream": source.stream, "start": source.start, "stop": source.stop},
    }


async def _run(request: web.Request, write: bool, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in an array pool; ArrayError is a 400, UnknownArray a 404."""
    service = service_of(request)
    pool = service.array_writes if write else service.array_reads
    try:
        return await service.off_loop(pool, function, *args)
    except UnknownArray as unknown:
        raise Failure(error(404, str(unknown))) from None
    except ArrayError as bad:
        raise Failure(error(400, str(bad))) from None


def _readable(service: Service, account: Account, name: str) -> DataArray:
    """The array, if ``account`` may read it (in a worker thread: opening reads metadata)."""
    array = service.arrays.open(name)
    if not account.may_read_array(array):
        raise UnknownArray(f"no array named {name!r}")  # not even its existence
    return array


async def list_arrays(request: web.Request) -> web.Response:
    account = require_account(request)
    service = service_of(request)

    def descriptions() -> list[dict[str, object]]:
        found = []
        for name in service.arrays.names():
            try:
                array = service.arrays.open(name)
            except UnknownArray:  # removed since listed
                continue
            if account.may_read_array(array):
                found.append(describe_array(array))
        return found

    return web.json_response(await _run(request, False, descriptions))


async def show_array(request: web.Request) -> web.Response:
    account = require_account(request)
    service = service_of(request)
    name = request.match_info["name"]
    array = await _run(request, False, _readable, service, account, name)
    return web.json_response(describe_array(array))


def parse_selection(text: str, shape: tuple[int, ...]) -> tuple[slice | int, ...]:
    """``0:1000,0`` -> (slice(0, 1000), 0): integers and ``start:stop[:step]`` per axis,
    within the shape (no negative index, no clipping: a range past the end is an error)."""
    if not text.strip():
        return ()
    parts = text.split(",")
    if len(parts) > len(shape):
        raise ArrayError(f"slice {text!r} has {len(parts)} axes, the array's shape is {shape}")
    selection: list[slice | int] = []
    for part, size in zip(parts, shape, strict=False):
        try:
            if ":" not in part:
                index = int(part)
                if not 0 <= index < size:
                    raise ArrayError(f"index {index} is outside axis of length {size}")
                selection.append(index)
                continue
            pieces = [int(piece) if piece.strip() else None for piece in part.split(":")]
            if len(pieces) > 3:
                raise ValueError(part)
            start, stop, step = (*pieces, None, None)[:3]
            start, stop = start or 0, size if stop is None else stop
            step = 1 if step is None else step
            if not 0 <= start <= stop <= size or step < 1:
                raise ArrayError(f"range {part!r} is outside axis of length {size}")
            selection.append(slice(start, stop, step))
        except ValueError as bad:
            if isinstance(bad, ArrayError):
                raise ArrayError(f"slice {text!r} for shape {shape}: {bad}") from None
            raise ArrayError(
                f"slice {text!r} is malformed: use integers and start:stop[:step] per axis "
                f"(the array's shape is {shape})"
            ) from None
    return tuple(selection)


def _selected_shape(selection: tuple[slice | int, ...], shape: tuple[int, ...]) -> list[int]:
    result = []
    for axis, size in enumerate(shape):
        part = selection[axis] if axis < len(selection) else slice(0, size, 1)
        if isinstance(part, slice):
            result.append(len(range(part.start, part.stop, part.step)))
    return result


async def array_data(request: web.Request) -> web.Response:
    account = require_account(request)
    service = service_of(request)
    name = request.match_info["name"]
    as_json = request.query.get("format", "npy") == "json"
    if request.query.get("format", "npy") not in ("npy", "json"):
        return error(400, "?format= must be npy or json")
    limits = service.limits

    def read() -> bytes:
        array = _readable(service, account, name)
        selection = parse_selection(request.query.get("slice", ""), array.shape)
        count = math.prod(_selected_shape(selection, array.shape))
        if as_json and count > limits.max_json_values:
            raise _TooLarge(
                f"the slice holds {count} values, more than {limits.max_json_values} as JSON: "
                "ask for a smaller slice, or format=npy"
            )
        if count * array.dtype.itemsize > limits.max_slice_bytes:
            raise _TooLarge(
                f"the slice holds {count * array.dtype.itemsize} bytes, more than "
                f"{limits.max_slice_bytes}: ask for a smaller slice (the shape is {array.shape})"
            )
        values = array[selection]
        if as_json:
            return json.dumps(
                {"shape": list(values.shape), "dtype": array.dtype.str, "data": _jsonable(values)}
            ).encode()
        out = io.BytesIO()
        np.lib.format.write_array(out, np.asarray(values), allow_pickle=False)
        return out.getvalue()

    try:
        body = await _run(request, False, read)
    except _TooLarge as large:
        return error(413, str(large))
    if as_json:
        return web.Response(body=body, content_type="application/json")
    return web.Response(
        body=body,
        content_type=NPY,
        headers={"Content-Disposition": f'attachment; filename="{name}.npy"'},
    )


class _TooLarge(Exception):
    pass


def _jsonable(values: np.ndarray) -> Any:
    """Numbers as JSON: NaN and infinities (which JSON lacks) as null; complex as [re, im]."""
    if values.dtype.kind == "c":
        return _jsonable(np.stack([values.real, values.imag], axis=-1))
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return np.where(np.isfinite(values), values, None).tolist()
    return values.tolist()


def _query_int(request: web.Request, name: str, default: int | None) -> int | None:
    value = request.query.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise Failure(error(400, f"?{name}= must be an integer, not {value!r}")) from None


async def array_window(request: web.Request) -> web.Response:
    account = require_account(request)
    service = service_of(request)
    name = request.match_info["name"]
    start = _query_int(request, "start", 0)
    stop = _query_int(request, "stop", None)
    most = service.limits.max_window_buckets
    buckets = _query_int(request, "buckets", min(DEFAULT_BUCKETS, most))
    column = _query_int(request, "column", 0)
    if buckets is None or not 1 <= buckets <= most:
        return error(400, f"?buckets= must be between 1 and {most}")

    def window() -> bytes:
        array = _readable(service, account, name)
        found = array.window(start, len(array) if stop is None else stop, buckets, column)
        return json.dumps(
            {
                "start": found.start,
                "stop": found.stop,
                "step": found.step,
                "level": found.level,
                "min": _jsonable(found.minimum),
                "max": _jsonable(found.maximum),
            }
        ).encode()

    return web.Response(body=await _run(request, False, window), content_type="application/json")


def parse_npy(body: bytes) -> np.ndarray:
    """The array of an ``.npy`` body, never unpickling: numeric dtypes only, every byte
    accounted for (a truncated or padded body is refused). No copy of the data."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                stream, max_header_size=_MAX_NPY_HEADER
            )
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                stream, max_header_size=_MAX_NPY_HEADER
            )
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, EOFError, SyntaxError, TypeError) as bad:
        raise ArrayError(f"the body is not a valid .npy file: {bad}") from None
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
        raise ArrayError(
            f"the .npy body holds dtype {dtype.str}: only bool, integer, float and complex "
            "arrays are accepted (never objects)"
        )
    count = math.prod(shape)
    expected = stream.tell() + count * dtype.itemsize
    if len(body) != expected:
        raise ArrayError(
            f"the .npy body is {len(body)} bytes, its header announces {expected} "
            f"(shape {shape}, dtype {dtype.str}): truncated or padded"
        )
    values = np.frombuffer(body, dtype, count, offset=stream.tell())
    return values.reshape(shape, order="F" if fortran else "C")


async def _npy_body(request: web.Request, service: Service) -> np.ndarray:
    require_content_type(request, NPY_TYPES)
    body = await read_body(request, service.limits.max_array_upload_bytes)
    try:
        return parse_npy(body)
    except ArrayError as bad:
        raise Failure(error(400, f"{bad}; nothing written")) from None


def _writer(account: Account) -> str:
    if account.policy is None:
        raise Failure(error(403, "write arrays with a policy's credentials: readers cannot"))
    return account.policy.name


async def put_array(request: web.Request) -> web.Response:
    """Create, or replace, an array with the body's dtype, row shape and rows."""
    service = service_of(request)
    service.router.refuse_if_closing()
    policy = _writer(require_account(request))
    name = request.match_info["name"]
    try:
        attributes = json.loads(request.query.get("attributes") or "{}")
    except ValueError as bad:
        return error(400, f"?attributes= must be a JSON object: {bad}")
    if not isinstance(attributes, dict):
        return error(400, "?attributes= must be a JSON object")
    chunk_rows = _query_int(request, "chunk_rows", None)
    values = await _npy_body(request, service)
    if values.ndim == 0:
        return error(400, "a 0-dimensional .npy cannot be an array: rows go along axis 0")

    def replace() -> DataArray:
        arrays = service.arrays
        try:
            old = arrays.open(name)
        except UnknownArray:
            old = None
        if old is not None and old.policy != policy:
            raise Failure(error(403, f"only policy {old.policy} may replace array {name!r}"))
        # Everything that can be refused is checked before the old array goes.
        check_new_array(name, values.dtype, values.shape[1:], attributes)
        if old is not None:
            arrays.remove(name)
        array = arrays.create(
            name,
            values.dtype,
            inner_shape=values.shape[1:],
            chunk_rows=chunk_rows,
            attributes=attributes,
            policy=policy,
        )
        array.append(values)
        service.save_array_record(array)
        return array

    array = await _run(request, True, replace)
    return web.json_response(describe_array(array), status=201)


async def append_rows(request: web.Request) -> web.Response:
    service = service_of(request)
    service.router.refuse_if_closing()
    account = require_account(request)
    policy = _writer(account)
    name = request.match_info["name"]
    values = await _npy_body(request, service)

    def append() -> None:
        array = _readable(service, account, name)
        if array.policy != policy:
            raise Failure(error(403, f"only policy {array.policy} may write to array {name!r}"))
        array.append(values)
        service.save_array_record(array)

    await _run(request, True, append)
    return web.Response(status=204)
