"""HTTP answers shared by every kiln server."""

from __future__ import annotations

from aiohttp import web


def error(status: int, message: str, **headers: str) -> web.Response:
    """A plain-text error that names the problem and, where possible, what to do.

    Plain text because the clients that read it are fluentd (which logs the body of a failed
    request), curl and build logs.
    """
    return web.Response(status=status, text=message + "\n", headers=headers)
