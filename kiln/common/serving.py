"""Serve HTTP (aiohttp) with bounds on slow and numerous clients.

Three things a server exposed to a network needs and aiohttp's ``TCPSite`` leaves open:

* a **header deadline**: a client that has not sent a whole request head within
  ``header_timeout`` seconds is closed (slowloris).  aiohttp has it already under another
  name: ``keepalive_timeout`` is armed when a connection opens and after each answer, bytes
  trickling in do not push it back, and when it fires with no whole request received the
  connection is closed.  :meth:`ConnectionLimits.runner_options` sets it;
* a **connection cap**: past ``max_connections`` open connections, a new one gets a short
  ``503`` with ``Retry-After`` and is closed at once, so that file descriptors and memory stay
  bounded (:class:`LimitedSite`);
* enough **file descriptors** for that cap: :func:`raise_open_file_limit` lifts the soft
  ``RLIMIT_NOFILE`` to the hard limit (often 1024 -> 1048576 under systemd).

And :func:`replace_server_banner`, for a ``Server:`` header without software versions.

Use::

    limits = ConnectionLimits(header_timeout=15, max_connections=512)
    raise_open_file_limit()
    replace_server_banner("kiln")
    runner = web.AppRunner(app, **limits.runner_options())
    await runner.setup()
    site = LimitedSite(runner, host, port, limits, ssl_context=context, backlog=1024)
    await site.start()
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web, web_response
from aiohttp.web_runner import BaseSite

from kiln.common.limits import ThrottledLog

log = logging.getLogger("kiln.serving")

# Where the hard limit is "unlimited", the soft limit is raised this far (the kernel refuses
# more than fs.nr_open anyway).
_UNLIMITED_TARGET = 1 << 20


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 15.0  # seconds to send a whole request head; also the keep-alive idle
    max_connections: int = 512  # open connections; past it, new ones get 503 and are closed

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.max_connections < 1:
            raise ValueError(
                f"header timeout {self.header_timeout!r} and connection cap"
                f" {self.max_connections!r}: both must be positive"
            )

    def runner_options(self) -> dict[str, float]:
        """Keyword arguments for ``web.AppRunner`` (or ``web.Server``) that set the deadline."""
        return {"keepalive_timeout": self.header_timeout}


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; answer the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as problem:  # e.g. over fs.nr_open: keep what we have
            log.warning("cannot raise the open-file limit to %d: %s", target, problem)
    return soft


def replace_server_banner(name: str) -> None:
    """Make every answer of this process say ``Server: name``, not the Python and aiohttp
    versions that scanners match against vulnerability lists.

    An app's own answers can be changed in ``on_response_prepare``, but aiohttp writes some
    answers before any app sees the request (``400`` for a malformed request line or header):
    those take the module's default, which this replaces (process-wide: servers only).
    """
    if not hasattr(web_response, "SERVER_SOFTWARE"):
        log.warning("this aiohttp has no SERVER_SOFTWARE: its error answers keep their banner")
    web_response.SERVER_SOFTWARE = name


def _refusal(retry_after: int) -> bytes:
    body = b"too many connections; retry later\n"
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    ) % (retry_after, len(body), body)


class _Gate:
    """Counts open connections, and logs refusals without flooding the log."""

    def __init__(self, limit: int, name: str) -> None:
        self.limit = limit
        self.name = name
        self.open = 0
        self._refusals = ThrottledLog(log)

    def admit(self) -> bool:
        if self.open < self.limit:
            self.open += 1
            return True
        self._refusals.warning(
            "%s: %d connections open, the cap: refused a new connection with 503",
            self.name,
            self.open,
        )
        return False

    def release(self) -> None:
        self.open -= 1


class _CappedProtocol(asyncio.Protocol):
    """Admits a connection through the gate, then hands every event to the real protocol."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], gate: _Gate) -> None:
        self._factory = factory
        self._gate = gate
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._gate.admit():
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_refusal(1))
            transport.close()
            return
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._gate.release()
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class LimitedSite(BaseSite):
    """A TCP site (like ``web.TCPSite``) that caps open connections and bounds TLS handshakes
    by the header deadline; pair it with ``web.AppRunner(app, **limits.runner_options())``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: ConnectionLimits,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 1024,
        name: str = "server",
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._limits = limits
        self._gate = _Gate(limits.max_connections, name)

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def open_connections(self) -> int:
        return self._gate.open

    async def start(self) -> None:
        await super().start()
        factory = self._runner.server
        assert factory is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _CappedProtocol(factory, self._gate),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=True,
            # A TLS client that never finishes its handshake is a slow client too.
            ssl_handshake_timeout=self._limits.header_timeout if self._ssl_context else None,
        )
