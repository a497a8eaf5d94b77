"""``HOST:PORT`` as every command and configuration file writes it, and URLs built on it."""

from __future__ import annotations

import socket
from urllib.parse import quote, urlsplit, urlunsplit


def parse_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``127.0.0.1:8420``, ``[::1]:8420``, ``:8420`` or (with a default port) ``HOST``.

    An empty host means 127.0.0.1: services listen on loopback unless told otherwise.
    Raises ValueError with a message that shows the expected form.
    """
    host, sep, port = text.strip().rpartition(":")
    if not sep or (host and not host.endswith("]") and ":" in host):
        # No colon at all, or a bare IPv6 address: the whole text is the host.
        if default_port is None:
            raise ValueError(f"{text!r}: write HOST:PORT, for example 127.0.0.1:8420")
        host, port = text.strip(), str(default_port)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host.strip("[]") or "127.0.0.1", int(port)


def redact(url: str) -> str:
    """The URL without its credentials, for messages, logs and download URLs."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    # The netloc after the last "@" is HOST:PORT exactly as written (IPv6 brackets kept).
    host_port = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host_port, parts.path, parts.query, parts.fragment))


def with_credentials(url: str, user: str, password: str) -> str:
    """The URL with ``user:password@`` in front of its HOST:PORT (quoted as URLs need)."""
    parts = urlsplit(redact(url))
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# The one default port of each service, used by every command, profile and document.
CACHE_PORT = 5080
WENDELIN_HTTP_PORT = 8420
FORWARD_PORT = 24224  # fluentd's own default for the forward protocol


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1, all bound at once (one at a time may repeat)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    """One free TCP port on 127.0.0.1 (for a server about to be started on it)."""
    return free_ports(1)[0]
