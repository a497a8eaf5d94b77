"""The ShaCache + ShaDir HTTP server (``kiln cache serve``).

Wire format: see docs/protocols/shacache.md.  ``/shacache`` holds blobs named by their sha512,
``/shadir/<key>`` holds signed entries.  Beyond the reference servers, this one re-hashes
every blob, writes atomically, validates entries, keeps them append-only, can verify
signatures against its own trust list, and authenticates every upload.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import shutil
import ssl
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from kiln.common.http import error
from kiln.common.limits import BoundedExecutor, Busy, ThrottledLog
from kiln.common.serving import (
    ConnectionLimits,
    LimitedSite,
    raise_open_file_limit,
    replace_server_banner,
)
from kiln.shacache.blob_response import blob_response
from kiln.shacache.entries import (
    MAX_ENTRY_BYTES,
    InvalidEntry,
    check_dir_key,
    is_sha512,
    parse_entry_body,
)
from kiln.shacache.keys import TrustList
from kiln.shacache.storage import (
    BlobNotFound,
    BlobStore,
    DirStore,
    HashMismatch,
    StorageFull,
    TooLarge,
    open_stores,
)
from kiln.shacache.users import CachedChecker, CertificateAuthority, UserDatabase

log = logging.getLogger("shacache.server")

# Hash and write in pieces this large, off the event loop, so that one big upload neither
# blocks other requests nor pays a thread hop per small network read.
WRITE_PIECE = 1 << 20
DEFAULT_MAX_BLOB = 8 << 30
# The answer's Server header: no software name or version for scanners to match.
SERVER_NAME = "kiln"


@dataclass(frozen=True)
class PoolSize:
    """A bounded worker pool: ``workers`` threads, at most ``queue`` jobs waiting."""

    workers: int
    queue: int


# Password checks (scrypt: ~50 ms and 16 MiB each): two at a time, so that a flood of bad
# passwords costs at most 32 MiB and two cores' worth of time, never the blob I/O pool.
DEFAULT_AUTH_POOL = PoolSize(workers=2, queue=32)
# Reading a key's entries (up to 100,000 of them, tens of MiB).
DEFAULT_DIR_POOL = PoolSize(workers=2, queue=16)


@dataclass
class ServerConfig:
    root: Path
    max_blob_size: int = DEFAULT_MAX_BLOB
    # Store only signed entries (--require-signed).  Off by default, as in the reference
    # servers: clients verify signatures themselves and ignore what they do not trust.
    require_signature: bool = False
    # When set, the server itself refuses entries that no trusted key signed.
    trust: TrustList | None = None
    # Downloads are anonymous unless this is set.
    private: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: list[Path] = field(default_factory=list)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    auth_pool: PoolSize = DEFAULT_AUTH_POOL
    dir_pool: PoolSize = DEFAULT_DIR_POOL

    @property
    def users_path(self) -> Path:
        return self.root / "users.json"

    @property
    def ca(self) -> CertificateAuthority:
        return CertificateAuthority(self.root / "ca")


class AccessLogger(AbstractAccessLogger):
    """One readable line per request; never the Authorization header."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        user = request.get("user", "-")
        size = response.body_length
        self.logger.info(
            '%s %s "%s %s" %d %d %.1fms',
            request.remote,
            user,
            request.method,
            request.path,
            response.status,
            size,
            time * 1000,
        )


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME


class CacheServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        config.root.mkdir(parents=True, exist_ok=True)
        self.blobs: BlobStore
        self.dirs: DirStore
        self.blobs, self.dirs = open_stores(config.root)
        self.users = CachedChecker(UserDatabase(config.users_path))
        # Slow work that any client can ask for runs in its own bounded pools, never in the
        # default one that serves blob reads and writes.
        self.auth_pool = BoundedExecutor(
            "password-check", config.auth_pool.workers, config.auth_pool.queue
        )
        self.dir_pool = BoundedExecutor(
            "shadir-read", config.dir_pool.workers, config.dir_pool.queue
        )
        self._busy_log = ThrottledLog(log)
        self._key_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        removed = self.blobs.remove_stale_uploads()
        if removed:
            log.info("removed %d unfinished upload(s) left by a previous run", removed)

    # --- Application -------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._busy_middleware, self._auth_middleware])
        app.on_response_prepare.append(_plain_server_header)
        app.on_cleanup.append(self._shutdown_pools)
        app.router.add_get("/", self.index)
        app.router.add_get("/health", self.health)
        app.router.add_post("/shacache", self.post_blob)
        app.router.add_post("/shacache/", self.post_blob)
        app.router.add_put("/shacache/{name}", self.put_blob)
        app.router.add_get("/shacache/{name}", self.get_blob)  # also answers HEAD
        app.router.add_put("/shadir/{key:.*}", self.put_entry)
        app.router.add_get("/shadir/{key:.*}", self.get_entries)
        return app

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        cas = list(self.config.tls_client_ca)
        if self.config.ca.cert_path.exists():
            cas.append(self.config.ca.cert_path)
        if cas:
            # A client certificate is optional (downloads are anonymous) but, when given,
            # it must chain to a trusted CA; its common name is then the user.
            context.verify_mode = ssl.CERT_OPTIONAL
            for ca in cas:
                context.load_verify_locations(cafile=str(ca))
        return context

    async def _shutdown_pools(self, app: web.Application) -> None:
        self.auth_pool.shutdown()
        self.dir_pool.shutdown()

    @web.middleware
    async def _busy_middleware(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        try:
            return await handler(request)
        except Busy as busy:
            self._busy_log.warning("%s %s refused with 503: %s", request.method, request.path, busy)
            return error(503, str(busy), **{"Retry-After": str(busy.retry_after)})

    # --- Authentication ----------------------------------------------------------------------

    def _user(self, request: web.Request, cached_only: bool = False) -> str | None:
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport else None
        if peer:
            for rdn in peer.get("subject", ()):
                for name, value in rdn:
                    if name == "commonName":
                        return f"cert:{value}"
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if self.users.check(name, password, cached_only=cached_only):
                return name
        return None

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        is_write = request.method in ("POST", "PUT", "DELETE")
        if request.path in ("/", "/health"):
            return await handler(request)
        if is_write or self.config.private:
            user = self._user(request, cached_only=True)
            if user is None and request.headers.get("Authorization", "").startswith("Basic "):
                # A password not seen before costs an scrypt: off the event loop, in the
                # bounded pool (a full pool raises Busy: 503 + Retry-After).
                user = await self.auth_pool.run(self._user, request)
            if user is None:
                what = "uploads" if is_write else "this cache"
                return error(
                    401,
                    f"{what} need credentials: HTTP Basic (kiln cache adduser NAME) or a"
                    " client certificate (kiln cache adduser NAME --cert)",
                    **{"WWW-Authenticate": 'Basic realm="kiln cache"'},
                )
            request["user"] = user
        response = await handler(request)
        if request.headers.get("Connection", "").lower() == "close":
            # slapos.libnetworkcache closes its side before reading: answer, then close.
            response.force_close()
        return response

    # --- Handlers ----------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(
            text="kiln cache\n"
            "  POST /shacache              upload a blob (answer: its sha512)\n"
            "  GET  /shacache/<sha512>     download a blob (Range supported)\n"
            "  PUT  /shadir/<key>          add a signed entry\n"
            "  GET  /shadir/<key>          list the entries of a key\n"
            "  GET  /health                health check\n"
        )

    async def health(self, request: web.Request) -> web.Response:
        usage = shutil.disk_usage(self.config.root)
        return web.json_response(
            {"status": "ok", "free_bytes": usage.free, "root_writable": True, "time": time.time()}
        )

    async def _receive_blob(self, request: web.Request, expected: str | None) -> web.Response:
        max_size = self.config.max_blob_size
        declared = request.content_length
        if declared is not None and declared > max_size:
            return error(413, f"the body ({declared} bytes) is over the limit of {max_size} bytes")
        loop = asyncio.get_running_loop()
        if declared is not None and declared <= WRITE_PIECE:
            # Small blobs: one read, then one trip to a worker thread for write + fsync + rename.
            try:
                # An empty file is a blob too; aiohttp's empty body refuses readexactly(0).
                body = await request.content.readexactly(declared) if declared else b""
            except (asyncio.IncompleteReadError, ConnectionError) as failure:
                log.warning("upload broken off: %s; nothing was stored", failure)
                return error(400, "truncated upload; nothing was stored")
            try:
                digest = await loop.run_in_executor(None, self._store_whole, body, expected)
            except HashMismatch as failure:
                return error(400, f"hash mismatch: {failure}")
            except OSError as failure:
                return self._storage_error(failure)
            return web.Response(status=201, text=digest)
        try:
            writer = await loop.run_in_executor(None, self.blobs.writer, max_size)
        except OSError as failure:
            return self._storage_error(failure)
        pending: asyncio.Future | None = None
        piece = bytearray()
        try:
            async for data in request.content.iter_any():
                piece += data
                if len(piece) >= WRITE_PIECE:
                    if pending is not None:
                        await pending
                    # Hashing and writing run in a thread while the next piece arrives.
                    pending = loop.run_in_executor(None, writer.write, piece)
                    piece = bytearray()
            if pending is not None:
                await pending
            if piece:
                await loop.run_in_executor(None, writer.write, piece)
            if declared is not None and writer.size != declared:
                raise EOFError(f"received {writer.size} of {declared} bytes")
            digest = await loop.run_in_executor(None, writer.commit, expected)
        except TooLarge as failure:
            writer.abort()
            return error(413, str(failure))
        except HashMismatch as failure:
            return error(400, f"hash mismatch: {failure}")
        except (EOFError, ConnectionError, asyncio.IncompleteReadError) as failure:
            writer.abort()
            log.warning("upload broken off: %s; nothing was stored", failure)
            return error(400, f"truncated upload: {failure}; nothing was stored")
        except OSError as failure:
            writer.abort()
            return self._storage_error(failure)
        except BaseException:
            if pending is not None:
                await asyncio.gather(pending, return_exceptions=True)
            writer.abort()
            raise
        return web.Response(status=201, text=digest)

    def _store_whole(self, body: bytes, expected: str | None) -> str:
        writer = self.blobs.writer()
        writer.write(body)
        return writer.commit(expected)

    def _storage_error(self, failure: OSError) -> web.Response:
        if isinstance(failure, StorageFull):
            log.error("disk full under %s: upload refused", self.config.root)
            return error(
                507, "the cache's disk is full; nothing was stored", **{"Retry-After": "60"}
            )
        log.exception("storage failure")
        return error(500, f"storage failure: {failure.strerror or failure}")

    async def post_blob(self, request: web.Request) -> web.Response:
        return await self._receive_blob(request, None)

    async def put_blob(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not is_sha512(name):
            return error(400, "a blob is named by its sha512: 128 lowercase hex characters")
        return await self._receive_blob(request, name)

    async def get_blob(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not is_sha512(name):
            return error(400, "a blob is named by its sha512: 128 lowercase hex characters")
        loop = asyncio.get_running_loop()
        try:
            blob = await loop.run_in_executor(None, self.blobs.open, name)
        except BlobNotFound:
            return error(404, f"no blob {name[:16]}...")
        with blob:
            return await blob_response(request, blob, name)

    def _key(self, request: web.Request) -> str:
        return check_dir_key(request.match_info["key"])

    async def put_entry(self, request: web.Request) -> web.Response:
        try:
            key = self._key(request)
            body = await _read_body(request, MAX_ENTRY_BYTES)
            entry = parse_entry_body(body)
        except InvalidEntry as failure:
            return error(400, str(failure))
        except _TooLong as failure:
            return error(413, str(failure))
        if not entry.signature and self.config.require_signature:
            return error(
                403,
                "unsigned entries are refused by this server (--require-signed): sign it"
                " (kiln cache keygen NAME, then --sign-with NAME.key)",
            )
        if self.config.trust is not None:
            verdict = self.config.trust.verify(entry.metadata_text, entry.signature)
            if not verdict.trusted:
                return error(403, f"entry refused: {verdict.reason}")
        lock = self._key_locks.setdefault(key, asyncio.Lock())
        async with lock:
            try:
                added = await asyncio.get_running_loop().run_in_executor(
                    None, self.dirs.append, key, entry
                )
            except OSError as failure:
                return self._storage_error(failure)
        if not added:
            log.info("entry for %s already present; not stored twice", key)
        return web.Response(status=201, text="created\n" if added else "already present\n")

    async def get_entries(self, request: web.Request) -> web.Response:
        try:
            key = self._key(request)
        except InvalidEntry as failure:
            return error(400, str(failure))
        # Up to 100,000 entries (tens of MiB): read in the bounded pool (full: 503), never on
        # the event loop, and without parsing them (see DirStore.read_json).
        body = await self.dir_pool.run(self.dirs.read_json, key)
        if body is None:
            return error(404, f"no entry for key {key}")
        return web.Response(body=body, content_type="application/json")


class _TooLong(ValueError):
    pass


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, however many TCP segments it came in; _TooLong past ``limit`` bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _TooLong(f"the body ({declared} bytes) is over the limit of {limit} bytes")
    body = bytearray()
    async for piece in request.content.iter_any():
        body += piece
        if len(body) > limit:
            raise _TooLong(f"the body is over the limit of {limit} bytes")
    return bytes(body)


async def serve(config: ServerConfig, host: str, port: int, ready=None) -> None:  # type: ignore[no-untyped-def]
    """Run until cancelled; call ``ready(url)`` once listening."""
    server = CacheServer(config)
    # The app's answers get it in on_response_prepare; this covers those aiohttp writes itself.
    replace_server_banner(SERVER_NAME)
    files = raise_open_file_limit()
    if files < config.limits.max_connections + 64:
        log.warning(
            "the open-file limit (%d) is below --max-connections (%d) plus the server's own"
            " files: raise the hard limit (ulimit -Hn) or lower --max-connections",
            files,
            config.limits.max_connections,
        )
    runner = web.AppRunner(
        server.make_app(),
        access_log_class=AccessLogger,
        access_log=logging.getLogger("shacache.access"),
        **config.limits.runner_options(),
    )
    await runner.setup()
    context = server.ssl_context()
    site = LimitedSite(
        runner, host, port, config.limits, ssl_context=context, backlog=1024, name="kiln cache"
    )
    await site.start()
    scheme = "https" if context else "http"
    bound_port = runner.addresses[0][1] if port == 0 else port
    shown_host = f"[{host}]" if ":" in host else host
    if ready is not None:
        ready(f"{scheme}://{shown_host}:{bound_port}")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
