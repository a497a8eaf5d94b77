"""Keep unauthenticated clients from holding a raw asyncio server's connections.

Two small tools for any asyncio protocol server (the forward protocol's TCP port, or
aiohttp's low-level ``web.Server``); :mod:`kiln.common.serving` has the aiohttp site and the
open-files limit:

- :class:`ConnectionCap`: at most N connections at once on a listener; past it, new
  connections are closed at once (and counted) instead of queueing for memory and fds;
- :func:`capped_protocol`: wraps an asyncio protocol factory with a ``ConnectionCap`` and an
  absolute deadline for the first request head, so a client sending its headers a byte at a
  time (slowloris) is closed after ``head_timeout`` seconds however often it sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class ConnectionCap:
    """Counts the open connections of one listener and admits at most ``limit`` at once."""

    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"{name}: the connection limit must be at least 1, not {limit}")
        self.name = name
        self.limit = limit
        self.active = 0
        self.refused = 0  # since start, for logs and tests

    def admit(self) -> bool:
        """Take a slot for a new connection; False (and logged) when all are taken."""
        if self.active >= self.limit:
            self.refused += 1
            log.warning(
                "%s: %d connections open, the limit: closing a new one (%d refused so far)",
                self.name,
                self.active,
                self.refused,
            )
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


class _CappedProtocol(asyncio.Protocol):
    """Forwards everything to the wrapped protocol, once the connection is admitted."""

    def __init__(
        self, inner: asyncio.Protocol, cap: ConnectionCap, head_timeout: float, head_end: bytes
    ) -> None:
        self._inner = inner
        self._cap = cap
        self._head_timeout = head_timeout
        self._head_end = head_end
        self._tail = b""  # the last bytes seen, for a head end split between two reads
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if not self._cap.admit():
            transport.abort()
            return
        self._admitted = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._head_timeout, self._too_slow)
        self._inner.connection_made(transport)

    def _too_slow(self) -> None:
        assert self._transport is not None
        peer = self._transport.get_extra_info("peername")
        log.warning(
            "%s: closing %s: no complete request head within %s s",
            self._cap.name,
            peer[0] if peer else "?",
            self._head_timeout,
        )
        self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            # Before its head ends, a request is only head bytes, which the server bounds.
            window = self._tail + data
            if self._head_end in window:
                self._deadline.cancel()
                self._deadline = None
            else:
                self._tail = window[-len(self._head_end) :]
        self._inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        if self._deadline is not None:
            self._deadline.cancel()
        self._cap.release()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def __getattr__(self, name: str) -> Any:  # anything else the transport asks the protocol
        return getattr(self._inner, name)


def capped_protocol(
    factory: Callable[[], asyncio.Protocol],
    cap: ConnectionCap,
    head_timeout: float,
    head_end: bytes = b"\r\n\r\n",
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``loop.create_server``: ``factory``'s protocols, admitted by
    ``cap``, each closed unless its first request head (up to ``head_end``) arrives within
    ``head_timeout`` seconds of connecting."""
    return lambda: _CappedProtocol(factory(), cap, head_timeout, head_end)
