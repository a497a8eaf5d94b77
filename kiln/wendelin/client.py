"""Python client for the stream and array API: streams and arrays read in bounded pieces,
arrays and figures saved back.

    ctx = wendelin.client.connect("http://127.0.0.1:8420", user, password)
    stream = ctx.streams["sensor.t1"]
    for time, record in stream.entries(since=time.time() - 3600): ...
    with wave.open(ctx.streams["recording.wav"].open()) as audio: ...   # HTTP ranges only
    spectrum = ctx.arrays["recording.fft"].to_dask()     # lazy: chunks fetched on compute
    ctx.save_array("recording.left", samples)            # a policy's account only
    ctx.save_figure("recording.fft.png", figure)

Nothing here loads a whole stream or array: ``iterate`` and ``open`` read by ``Range``,
``entries`` pages with ``X-Next-Start``, ``to_dask`` fetches one chunk per task, and
``save_array`` sends a Dask array one block at a time.

Reading works with a reader's or a policy's account.  Saving needs an ingestion policy's
own credentials (the server refuses a reader, and a policy writing another's array): it
raises ``ReadOnlyAccount`` then.
"""

import datetime
import io
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

import msgpack
import numpy as np
import requests

from kiln.wendelin import eventtime

if TYPE_CHECKING:
    import dask.array
    import matplotlib.figure

NPY = "application/x-npy"
# Bytes of array data per write request: well under the server's body limit (64 MiB by
# default), and what one request holds in memory on both sides.
REQUEST_BYTES = 8 << 20


class ReadOnlyAccount(PermissionError):
    """A write refused because the account may not write there (a reader, or another
    policy's array or stream): saving needs the owning ingestion policy's credentials."""


def _raise_for_status(response: requests.Response) -> None:
    """``raise_for_status``, with the server's own message (it names what is wrong)."""
    if response.status_code < 400:
        return
    message = response.text.strip()[:1000]
    raise requests.HTTPError(
        f"{response.status_code} {response.reason} for {response.request.method} "
        f"{response.url}: {message}",
        response=response,
    )


class Context:
    """A connection to one server with one account."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        timeout: float = 60.0,
        ca: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.timeout = timeout
        # Passed on every request: requests lets $REQUESTS_CA_BUNDLE override session.verify.
        self.verify: str | bool = ca or True

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request; an error answer raises ``requests.HTTPError`` with its message."""
        response = self.session.request(
            method, self.url + path, timeout=self.timeout, verify=self.verify, **kwargs
        )
        _raise_for_status(response)
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def write(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A write: 403 (not this account's to write) raises ``ReadOnlyAccount``."""
        try:
            return self.request(method, path, **kwargs)
        except requests.HTTPError as error:
            if error.response is not None and error.response.status_code == 403:
                raise ReadOnlyAccount(
                    f"{error}\nSaving needs the credentials of the ingestion policy that owns "
                    "the array or stream (etc/wendelin-default-policy.json in an instance): a "
                    "reader's account only reads, and a policy writes only its own arrays and "
                    "the stream names its tag pattern accepts."
                ) from None
            raise

    @property
    def streams(self) -> "Streams":
        return Streams(self)

    @property
    def arrays(self) -> "Arrays":
        return Arrays(self)

    def save_array(
        self,
        name: str,
        data: "np.ndarray | dask.array.Array",
        attributes: dict | None = None,
        chunk_rows: int | None = None,
        request_bytes: int = REQUEST_BYTES,
    ) -> "Array":
        """Create or replace array ``name`` with ``data``; needs a policy's credentials.

        A Dask array is computed and sent one block of rows (axis 0) at a time: the first
        request creates the array (``PUT``), each next one appends (``POST .../append``), so
        an array larger than memory is never held at once.  Requests carry at most
        ``request_bytes`` of data.  Each append is atomic for readers, but the whole save is
        not: if it stops half-way, the array holds the rows sent so far (save again).
        ``chunk_rows``: rows per stored chunk (what ``to_dask`` reads per task); default, the
        server's choice (chunks of a few MiB).
        """
        if np.ndim(data) == 0:
            raise ValueError("an array has at least one dimension: rows go along axis 0")
        path = f"/api/arrays/{quote(name, safe='')}"
        params: dict[str, str | int] = {}
        if attributes:
            params["attributes"] = json.dumps(attributes)
        if chunk_rows is not None:
            params["chunk_rows"] = chunk_rows
        created = False
        for rows in _row_pieces(data, request_bytes):
            body = _npy_bytes(rows)
            headers = {"Content-Type": NPY}
            if created:
                self.write("POST", path + "/append", data=body, headers=headers)
            else:
                self.write("PUT", path, params=params, data=body, headers=headers)
                created = True
        return self.arrays[name]

    def upload(
        self, name: str, data: bytes | BinaryIO, content_type: str = "application/octet-stream"
    ) -> "Stream":
        """Upload ``data`` (bytes, or a binary file read as it is sent) as a new raw stream
        ``name``; needs a policy's credentials.  Streams are append-only and never replaced:
        a name that exists raises ``FileExistsError``."""
        try:
            response = self.write(
                "PUT",
                f"/api/streams/{quote(name, safe='')}",
                data=data,
                headers={"Content-Type": content_type},
            )
        except requests.HTTPError as error:
            if error.response is not None and error.response.status_code == 409:
                raise FileExistsError(str(error)) from None
            raise
        return Stream(self, response.json())

    def save_figure(
        self, name: str, figure: "matplotlib.figure.Figure", **savefig: Any
    ) -> "Stream":
        """Save a matplotlib figure as PNG into a new raw stream ``name`` (as ``upload``);
        ``savefig`` options (``dpi``...) are passed to ``figure.savefig``."""
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", **savefig)
        return self.upload(name, buffer.getvalue(), "image/png")

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(url: str, user: str, password: str, ca: str | None = None) -> Context:
    """Log in with a policy's or a reader's credentials (checked right away).

    Both read every stream and array the account may see.  Saving (``save_array``,
    ``save_figure``, ``upload``) needs an ingestion policy's own credentials: with a reader's
    the server refuses, and the client raises ``ReadOnlyAccount``.

    ``ca``: a PEM file of the certificate(s) to trust for an ``https://`` server whose
    certificate the system does not trust (a self-signed one, say).
    """
    context = Context(url, user, password, ca=ca)
    context.get("/api/streams")
    return context


class Streams:
    """The streams this account may read: iterable, ``len()``, and ``[name]``."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def _list(self) -> list[dict]:
        return self._context.get("/api/streams").json()

    def __iter__(self) -> Iterator["Stream"]:
        return iter([Stream(self._context, info) for info in self._list()])

    def __len__(self) -> int:
        return len(self._list())

    def __contains__(self, name: object) -> bool:
        return any(info["name"] == name for info in self._list())

    def __getitem__(self, name: str) -> "Stream":
        return Stream(self._context, _describe(self._context, "streams", name))

    def names(self) -> list[str]:
        return [info["name"] for info in self._list()]


def _describe(context: Context, kind: str, name: str) -> dict:
    """``GET /api/<kind>/<name>``; KeyError if there is none (or this account cannot see it)."""
    try:
        return context.get(f"/api/{kind}/{quote(name, safe='')}").json()
    except requests.HTTPError as error:
        if error.response is not None and error.response.status_code == 404:
            raise KeyError(name) from None
        raise


def _seconds(when: float | datetime.datetime | None) -> float | None:
    if isinstance(when, datetime.datetime):
        return when.timestamp()
    return when


class Stream:
    def __init__(self, context: Context, info: dict) -> None:
        self._context = context
        self.info = info
        self.name: str = info["name"]
        self._path = f"/api/streams/{quote(self.name, safe='')}"

    def __repr__(self) -> str:
        return f"<Stream {self.name} {self.size} bytes, {self.entry_count} entries>"

    def refresh(self) -> "Stream":
        self.info = self._context.get(self._path).json()
        return self

    @property
    def size(self) -> int:
        return self.info["size"]

    @property
    def entry_count(self) -> int:
        return self.info["entries"]

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the stream."""
        if end <= start:
            return b""
        response = self._context.get(
            self._path + "/data", headers={"Range": f"bytes={start}-{end - 1}"}
        )
        return response.content

    def iterate(
        self, start: int = 0, end: int | None = None, chunk_size: int = 4 << 20
    ) -> Iterator[bytes]:
        """Bytes [start, end) in pieces of at most ``chunk_size`` (one Range request each)."""
        end = self.refresh().size if end is None else end
        while start < end:
            piece = self.read(start, min(start + chunk_size, end))
            if not piece:
                return
            start += len(piece)
            yield piece

    def entries(
        self,
        since: float | datetime.datetime | None = None,
        until: float | datetime.datetime | None = None,
        start: int = 0,
        stop: int | None = None,
        page: int = 10_000,
    ) -> Iterator[tuple[float, dict]]:
        """``(seconds, record)`` for entries by index [start, stop) and time [since, until)."""
        params: dict[str, object] = {"limit": page}
        if since is not None:
            params["since"] = _seconds(since)
        if until is not None:
            params["until"] = _seconds(until)
        if stop is not None:
            params["stop"] = stop
        next_start: int | None = start
        while next_start is not None:
            params["start"] = next_start
            response = self._context.get(self._path + "/entries", params=params)
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
            unpacker.feed(response.content)
            for time_value, record in unpacker:
                yield eventtime.to_seconds(time_value), record
            header = response.headers.get("X-Next-Start")
            next_start = int(header) if header is not None else None

    def open(self, block_size: int = 1 << 20) -> io.BufferedReader:
        """A seekable, read-only binary file over HTTP ranges (for wave, scipy, numpy...)."""
        return io.BufferedReader(RangeFile(self.refresh()), buffer_size=block_size)


class RangeFile(io.RawIOBase):
    """Raw file whose reads are HTTP Range requests; the stream's size is fixed at open."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._size = stream.size
        self._position = 0
        self.name = stream.name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        end = min(self._position + len(buffer), self._size)
        if end <= self._position:
            return 0
        data = self._stream.read(self._position, end)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


class Arrays:
    """The arrays this account may read: iterable, ``len()``, ``in`` and ``[name]``."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def _list(self) -> list[dict]:
        return self._context.get("/api/arrays").json()

    def __iter__(self) -> Iterator["Array"]:
        return iter([Array(self._context, info) for info in self._list()])

    def __len__(self) -> int:
        return len(self._list())

    def __contains__(self, name: object) -> bool:
        return any(info["name"] == name for info in self._list())

    def __getitem__(self, name: str) -> "Array":
        return Array(self._context, _describe(self._context, "arrays", name))

    def names(self) -> list[str]:
        return [info["name"] for info in self._list()]


class Array:
    """An array's metadata (as of when it was fetched) and reads of its data.

    ``array[0:1000, 0]`` reads one slice into memory (one request, within the server's
    size limit); ``array.to_dask()`` is the whole array, lazily, for anything larger.
    """

    def __init__(self, context: Context, info: dict) -> None:
        self._context = context
        self.info = info
        self.name: str = info["name"]
        self._path = f"/api/arrays/{quote(self.name, safe='')}"

    def __repr__(self) -> str:
        return f"<Array {self.name} {self.dtype} shape={self.shape} chunks={self.chunks}>"

    def refresh(self) -> "Array":
        self.info = self._context.get(self._path).json()
        return self

    @property
    def policy(self) -> str | None:
        return self.info["policy"]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.info["dtype"])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.info["shape"])

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.info["chunks"])

    @property
    def attributes(self) -> dict:
        return self.info["attributes"]

    @property
    def source(self) -> dict | None:
        """``{"stream", "start", "stop"}``: the stream range the array was made from."""
        return self.info.get("source")

    def __getitem__(self, selection: object) -> np.ndarray:
        return self._read(_bounds(selection, self.shape))

    def _read(self, bounds: tuple[int | tuple[int, int], ...]) -> np.ndarray:
        """The slice ``bounds`` (per axis an index or ``(start, stop)``) as one npy request."""
        shape = tuple(b[1] - b[0] for b in bounds if isinstance(b, tuple))
        if 0 in shape:  # nothing to fetch (and an empty range is no valid slice to send)
            return np.empty(shape, self.dtype)
        text = ",".join(f"{b[0]}:{b[1]}" if isinstance(b, tuple) else str(b) for b in bounds)
        response = self._context.get(self._path + "/data", params={"slice": text, "format": "npy"})
        return np.load(io.BytesIO(response.content), allow_pickle=False)

    def to_dask(self) -> "dask.array.Array":
        """The array as a lazy Dask array chunked like the store: computing it fetches each
        needed chunk with one ``/data?slice=...`` request (none before)."""
        import dask.array
        from dask.base import tokenize

        return dask.array.from_array(
            _RemoteChunks(self),
            chunks=self.chunks,
            name="wendelin-array-" + tokenize(self._context.url, self.info),
            lock=False,
            asarray=False,
            fancy=False,
            meta=np.empty((0,) * len(self.shape), self.dtype),
        )


class _RemoteChunks:
    """What ``to_dask`` reads from: an array-like whose basic slices are requests."""

    def __init__(self, array: Array) -> None:
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, selection: object) -> np.ndarray:
        return self._array[selection]


def _bounds(selection: object, shape: tuple[int, ...]) -> tuple[int | tuple[int, int], ...]:
    """Per axis, an index or a ``(start, stop)`` range within ``shape``, from a basic
    numpy selection (integers and step-1 slices; missing axes are whole)."""
    items = selection if isinstance(selection, tuple) else (selection,)
    if len(items) > len(shape):
        raise IndexError(f"{len(items)} indices for an array of shape {shape}")
    bounds: list[int | tuple[int, int]] = []
    for item, size in zip(items, shape, strict=False):
        if isinstance(item, slice):
            start, stop, step = item.indices(size)
            if step != 1:
                raise IndexError("only step-1 slices are fetched: use to_dask() for others")
            bounds.append((start, max(start, stop)))
        elif isinstance(item, int | np.integer):
            index = int(item) + size if item < 0 else int(item)
            if not 0 <= index < size:
                raise IndexError(f"index {item} is out of range for axis of size {size}")
            bounds.append(index)
        else:
            raise IndexError(f"{item!r}: only integers and slices select from a remote array")
    bounds.extend((0, size) for size in shape[len(items) :])
    return tuple(bounds)


def _npy_bytes(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(rows), allow_pickle=False)
    return buffer.getvalue()


def _row_pieces(data: "np.ndarray | dask.array.Array", request_bytes: int) -> Iterable[np.ndarray]:
    """``data`` as consecutive row ranges (axis 0) of at most ``request_bytes`` each (at least
    one row), computing a Dask array one block of rows at a time.  An empty array is one
    piece, so that the array is still created."""
    if hasattr(data, "blocks") and hasattr(data, "numblocks"):  # a Dask array
        if data.numblocks[0] == 0:
            yield np.asarray(data.compute())
            return
        for index in range(data.numblocks[0]):
            yield from _split_rows(np.asarray(data.blocks[index].compute()), request_bytes)
        return
    yield from _split_rows(np.asarray(data), request_bytes)


def _split_rows(rows: np.ndarray, request_bytes: int) -> Iterator[np.ndarray]:
    if len(rows) == 0:
        yield rows
        return
    per_request = max(1, request_bytes // max(1, rows[0].nbytes))
    for start in range(0, len(rows), per_request):
        yield rows[start : start + per_request]
