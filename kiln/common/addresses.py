"""``HOST:PORT`` as every command and configuration file writes it."""

from __future__ import annotations


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


# The one default port of each service, used by every command, profile and document.
CACHE_PORT = 5080
WENDELIN_HTTP_PORT = 8420
FORWARD_PORT = 24224  # fluentd's own default for the forward protocol
