"""Python client for the stream API: list streams, read bytes and entries in bounded pieces.

    ctx = wendelin.client.connect("http://127.0.0.1:8420", user, password)
    stream = ctx.streams["sensor.t1"]
    for time, record in stream.entries(since=time.time() - 3600): ...
    with wave.open(ctx.streams["recording.wav"].open()) as audio: ...   # HTTP ranges only

Nothing here loads a whole stream: ``iterate`` and ``open`` read by ``Range``, ``entries``
pages with ``X-Next-Start``.
"""

import datetime
import io
from collections.abc import Iterator
from urllib.parse import quote

import msgpack
import requests

from kiln.wendelin import eventtime


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

    def get(self, path: str, **kwargs: object) -> requests.Response:
        response = self.session.get(
            self.url + path, timeout=self.timeout, verify=self.verify, **kwargs
        )
        response.raise_for_status()
        return response

    @property
    def streams(self) -> "Streams":
        return Streams(self)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(url: str, user: str, password: str, ca: str | None = None) -> Context:
    """Log in with a policy's or a reader's credentials (checked right away).

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
        response = self._context.session.get(
            f"{self._context.url}/api/streams/{quote(name, safe='')}",
            timeout=self._context.timeout,
            verify=self._context.verify,
        )
        if response.status_code == 404:
            raise KeyError(name)
        response.raise_for_status()
        return Stream(self._context, response.json())

    def names(self) -> list[str]:
        return [info["name"] for info in self._list()]


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
