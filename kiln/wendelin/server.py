"""One process serving HTTP (ingest, API, web pages) and the forward protocol."""

import asyncio
import logging
import signal
import ssl
from pathlib import Path

from aiohttp import web

from kiln.common.connection_limits import ConnectionCap, capped_protocol
from kiln.common.serving import raise_open_file_limit, replace_server_banner
from kiln.wendelin import api, static
from kiln.wendelin import web as pages
from kiln.wendelin.arrays import routes as array_routes
from kiln.wendelin.httputil import SERVICE, credentials, failures, same_origin
from kiln.wendelin.inputs import forms, http_ingest, stream_api
from kiln.wendelin.inputs.forward import ForwardServer
from kiln.wendelin.service import Catalog, Limits, Service
from kiln.wendelin.transform import web as transform_web
from kiln.wendelin.transform.runner import Runner, TransformSettings

log = logging.getLogger(__name__)
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'


async def health(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if service.shutting_down:
        return web.Response(status=503, text="shutting down\n", headers={"Retry-After": "10"})
    return web.Response(text="ok\n")


def make_app(service: Service, dygraphs: Path | None = None) -> web.Application:
    """The HTTP app; ``dygraphs``: the directory of dygraph.min.js for the charts (None: the
    pages show how to install it instead)."""
    # The body limit is enforced by the handlers, which stream; aiohttp's own limit only
    # applies to request.post() forms.
    # Cross-site writes are refused before any password is checked; refusals from the
    # credentials check (503 when its queue is full) are answered by ``failures``.
    app = web.Application(
        middlewares=[failures, same_origin, credentials],
        client_max_size=service.limits.max_chunk_bytes,
    )
    app.on_response_prepare.append(pages.security_headers)
    app[SERVICE] = service
    app.router.add_get("/healthz", health)
    http_ingest.add_routes(app)
    stream_api.add_routes(app)
    forms.add_routes(app)
    api.add_routes(app)
    array_routes.add_routes(app)
    pages.add_routes(app)
    static.add_routes(app, static.StaticFiles(dygraphs))
    return app


def tls_context(certificate: str | None, key: str | None) -> ssl.SSLContext | None:
    if not certificate:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return context


async def serve(
    root: str,
    listen: tuple[str, int],
    forward_listen: tuple[str, int] | None,
    limits: Limits,
    http_tls: ssl.SSLContext | None = None,
    forward_tls: ssl.SSLContext | None = None,
    catalog: Catalog | None = None,
    transforms: TransformSettings | None = None,
    dygraphs: Path | None = None,
) -> None:
    # on_response_prepare (pages.security_headers) never sees the 400 aiohttp writes itself
    # for a malformed request: those take the process-wide banner, which carried the versions.
    replace_server_banner("wendelin")
    log.info("open files limit: %d", raise_open_file_limit())
    service = Service(root, limits, catalog)
    transformer = Runner(service.root, service.streams, service.arrays, transforms)
    app = make_app(service, dygraphs)
    transform_web.attach(app, transformer)
    runner = web.AppRunner(app, access_log_format=ACCESS_LOG_FORMAT, handle_signals=False)
    await runner.setup()
    loop = asyncio.get_running_loop()
    assert runner.server is not None
    # Not web.TCPSite: its connections are neither capped nor given a deadline for their
    # request head, so slow clients could hold every descriptor (slowloris).
    http_cap = ConnectionCap("http", limits.max_connections)
    http_server = await loop.create_server(
        capped_protocol(runner.server, http_cap, limits.header_timeout),
        listen[0],
        listen[1],
        ssl=http_tls,
        backlog=512,
        reuse_address=True,
    )
    forward_server = None
    if forward_listen is not None:
        forward = ForwardServer(
            service.router,
            service.policies,
            limits.max_chunk_bytes,
            handshake_timeout=limits.handshake_timeout,
            max_handshake_bytes=limits.max_handshake_bytes,
            max_members=limits.max_members,
            max_record_depth=limits.max_record_depth,
            max_connections=limits.max_forward_connections,
            decompressions=service.decompressions,
        )
        forward_server = await forward.start(*forward_listen, ssl_context=forward_tls)
    if dygraphs is None:
        log.warning("dygraphs not found: the pages show no charts (see --dygraphs)")
    log.info(
        "serving root %s: %s on %s:%d, forward on %s",
        service.root,
        "HTTPS" if http_tls else "HTTP",
        *listen,
        f"{forward_listen[0]}:{forward_listen[1]}" if forward_listen else "(off)",
    )
    stop = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    syncing = asyncio.create_task(service.sync_catalog_forever())
    transforming = asyncio.create_task(transformer.run_forever())
    await stop.wait()
    log.info("shutting down: refusing new data with 503, committing what is queued")
    service.start_closing()
    if forward_server is not None:
        forward_server.close()
    syncing.cancel()
    transforming.cancel()
    await transformer.close()  # a step in progress finishes: its appends are atomic anyway
    await service.close()
    http_server.close()
    await runner.cleanup()
    log.info("stopped")
