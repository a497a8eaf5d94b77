"""The state one `kiln wendelin serve` process holds, shared by HTTP and forward handlers."""

import asyncio
import base64
import binascii
import fcntl
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from kiln.common.limits import BoundedExecutor, Busy
from kiln.wendelin.arrays.basics import LazyArrayStore, UnknownArray
from kiln.wendelin.catalog import ArrayRecord, Catalog, StreamRecord, open_catalog
from kiln.wendelin.policies import Policy, PolicyRegistry
from kiln.wendelin.record_time import TimeKey
from kiln.wendelin.refusals import Unavailable
from kiln.wendelin.router import Router
from kiln.wendelin.stream_reader import StoreReader, StreamReader
from kiln.wendelin.streams import StreamStore

if TYPE_CHECKING:
    from kiln.wendelin.arrays.store import DataArray

log = logging.getLogger(__name__)
T = TypeVar("T")
# Set on each request by verify_credentials (None: no or wrong credentials).
_ACCOUNT: web.RequestKey["Account | None"] = web.RequestKey("account", object)


@dataclass(frozen=True, slots=True)
class Limits:
    max_chunk_bytes: int = 64 << 20  # one HTTP chunk or one forward message
    max_upload_bytes: int = 16 << 30  # a manual raw upload, streamed to disk
    max_pending_bytes: int = 256 << 20  # queued for commit before answering 503
    max_receiving_bytes: int = 256 << 20  # HTTP bodies being received at once, likewise
    dedup_retention: float = 7 * 24 * 3600.0
    # What an unauthenticated or abusive client can hold (docs/security.md lists them all).
    max_connections: int = 512  # open HTTP connections; past it new ones are closed
    max_forward_connections: int = 512  # likewise on the forward port
    header_timeout: float = 10.0  # seconds for a new HTTP connection's first request head
    handshake_timeout: float = 10.0  # seconds from connect to a completed forward handshake
    max_handshake_bytes: int = 64 << 10  # forward bytes buffered before the handshake
    max_members: int = 10_000  # gzip members or zstd frames in one forward message
    max_streams_per_policy: int = 1_000  # streams one policy may create
    max_open_streams: int = 256  # streams whose files are open at once (an LRU)
    max_record_depth: int = 64  # nesting of maps and arrays in an accepted record
    # Not a limit but a setting of the HTTP record inputs (/tags, out_http's records): fluentd
    # in_http's time_key and keep_time_key (record_time.py).
    time_key: TimeKey = field(default_factory=TimeKey)
    max_page_entries: int = 100_000  # entries in one page of GET .../entries
    max_series_entries: int = 1_000_000  # entries one GET .../series reads (then: zoom in)
    max_series_buckets: int = 4_000  # points per field in one GET .../series
    cpu_queue: int = 16  # jobs waiting per worker pool (decompression, large reads)
    password_queue: int = 64  # password checks waiting (about 50 ms each, one at a time)
    # Data arrays (kiln/wendelin/arrays): what one request may read, ask or send.
    max_slice_bytes: int = 64 << 20  # one slice of GET /api/arrays/<name>/data (.npy)
    max_json_values: int = 1_000_000  # values in one slice asked as JSON (about 20 B each)
    max_window_buckets: int = 10_000  # buckets of GET /api/arrays/<name>/window
    max_array_upload_bytes: int = 128 << 20  # one .npy body of PUT or append, held to check


@dataclass(frozen=True, slots=True)
class Account:
    """Who is asking: a policy (its streams, read and write) or a reader (every stream, read)."""

    name: str
    policy: Policy | None

    def may_read(self, stream: StreamReader) -> bool:
        return self.policy is None or stream.policy == self.policy.name

    def may_write(self, stream: StreamReader) -> bool:
        return self.policy is not None and stream.policy == self.policy.name

    def may_read_array(self, array: "DataArray") -> bool:
        """Readers read every array; a policy its own (not those of no policy)."""
        return self.policy is None or array.policy == self.policy.name


class Service:
    """Policies and accounts, the streams' read side, and the router that writes them."""

    def __init__(
        self, root: str, limits: Limits | None = None, catalog: Catalog | None = None
    ) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self._lock = _lock_root(self.root)
        self.limits = limits or Limits()
        # The embedded default; any Catalog (catalog_postgres.PostgresCatalog) can be passed.
        self.catalog = catalog or open_catalog(self.root)
        self.policies = PolicyRegistry(self.root, self.catalog)
        self._store = StreamStore(
            self.root,
            dedup_retention=self.limits.dedup_retention,
            max_pending_bytes=self.limits.max_pending_bytes,
            max_open_streams=self.limits.max_open_streams,
        )
        # Handlers read through ``streams`` and write through ``router`` only.
        self.streams: StoreReader = self._store
        self.router = Router(self._store, self.limits.max_streams_per_policy)
        self.receiving_bytes = 0  # HTTP bodies in memory right now (see httputil.read_body)
        # CPU work off the event loop, each in its own bounded pool, so that a flood of one
        # kind (wrong passwords, compressed floods, huge reads) answers 503 instead of
        # queueing without end, and cannot take the threads of another kind or of the disk.
        queue = self.limits.cpu_queue
        self._password_checks = BoundedExecutor("password-check", 1, self.limits.password_queue)
        self.decompressions = BoundedExecutor("decompress", 1, queue)
        self.conversions = BoundedExecutor("convert", 1, queue)
        # Data arrays, under <root>/arrays; their reads and writes go through these pools
        # (Zarr's calls block: never on the event loop). One writer: appends to one array
        # are serialized anyway, and a flood of uploads waits here, not in memory.
        # Opened at the first array: numpy and Zarr are not imported before (basics.py).
        self.arrays = LazyArrayStore(os.path.join(self.root, "arrays"))
        self.array_reads = BoundedExecutor("array-read", 2, queue)
        self.array_writes = BoundedExecutor("array-write", 1, queue)

    async def off_loop(self, pool: BoundedExecutor, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` in ``pool``; Unavailable (503 + Retry-After) when it is full."""
        try:
            return await pool.run(function, *args)
        except Busy as full:
            raise Unavailable(f"overloaded, {full}", retry_after=2) from None

    def authenticate(self, request: web.Request) -> Account | None:
        """HTTP Basic against policy users, then reader accounts.

        The answer ``verify_credentials`` found for this request; it never runs scrypt.
        """
        if _ACCOUNT in request:
            return request[_ACCOUNT]
        found = self._stored_hash(request)  # not through the app's middleware: cache only
        if found is None:
            return None
        user, password, stored, policy = found
        if stored is None or not self.policies.is_verified(user, password, stored):
            return None
        return Account(user, policy)

    async def verify_credentials(self, request: web.Request) -> None:
        """Check a request's Basic password before its handler runs, for ``authenticate``.

        scrypt takes about 50 ms of CPU: on the event loop, every wrong password would stall
        all ingest for that long, so it runs in a worker thread (one, so that a flood of
        wrong passwords keeps one core at most). Accepted passwords are cached. An unknown
        user is checked against a decoy hash, so that it takes as long as a known user's
        wrong password (no user enumeration by timing). A full queue of checks is Unavailable
        (503).
        """
        request[_ACCOUNT] = None
        found = self._stored_hash(request)
        if found is None:
            return
        user, password, stored, policy = found
        verified = stored is not None and self.policies.is_verified(user, password, stored)
        if not verified:
            check = self.policies.check_password
            verified = await self.off_loop(self._password_checks, check, user, password, stored)
        if verified and stored is not None:
            request[_ACCOUNT] = Account(user, policy)

    def _stored_hash(
        self, request: web.Request
    ) -> tuple[str, str, str | None, Policy | None] | None:
        """(user, password, stored hash, policy or None for a reader) of Basic credentials;
        the hash is None for an unknown user."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        policy = self.policies.by_user(user)
        if policy is not None:
            return user, password, policy.record.password_hash, policy
        return user, password, self.catalog.reader_hash(user), None

    @property
    def shutting_down(self) -> bool:
        return self.router.closing

    def start_closing(self) -> None:
        """Refuse new data (503, forward: no ack); what is queued still commits."""
        self.router.start_closing()

    def readable_streams(self, account: Account) -> list[StreamReader]:
        return [stream for stream in self.streams if account.may_read(stream)]

    def sync_catalog(self) -> None:
        """Copy live stream statistics into the catalog, for listings from other processes."""
        for stream in self.streams:
            stats = stream.stats
            self.catalog.save_stream(
                StreamRecord(
                    stream.name,
                    stream.policy,
                    stream.kind,
                    stats.size,
                    stats.entries,
                    None if math.isnan(stats.first_time) else stats.first_time,
                    None if math.isnan(stats.last_time) else stats.last_time,
                    None if math.isnan(stats.last_ingest) else stats.last_ingest,
                )
            )
        self._store.prune_dedup()

    def sync_array_catalog(self) -> None:
        """Copy every array's description into the catalog, and forget removed ones (reads
        each array's metadata: in a worker thread)."""
        present = set()
        names = self.arrays.names() if self.arrays.holds_arrays() else []
        for name in names:
            try:
                self.save_array_record(self.arrays.open(name))
            except UnknownArray:  # removed meanwhile
                continue
            present.add(name)
        for record in self.catalog.arrays():
            if record.name not in present:
                self.catalog.remove_array(record.name)

    def save_array_record(self, array: "DataArray") -> None:
        source = array.provenance
        self.catalog.save_array(
            ArrayRecord(
                array.name,
                array.policy,
                array.dtype.str,
                array.shape,
                array.chunks,
                array.attributes,
                None if source is None else source.stream,
                None if source is None else source.start,
                None if source is None else source.stop,
                time.time(),
            )
        )

    async def sync_catalog_forever(self, period: float = 5.0) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                self.sync_catalog()
                await self.off_loop(self.array_reads, self.sync_array_catalog)
            except Exception:
                log.exception("catalog sync failed; retrying in %s s", period)

    async def close(self) -> None:
        self.start_closing()
        await self._store.close()
        pools = (self._password_checks, self.decompressions, self.conversions)
        for pool in (*pools, self.array_reads, self.array_writes):
            pool.shutdown(wait=True)
        self.sync_catalog()
        await asyncio.to_thread(self.sync_array_catalog)  # Zarr blocks: not on the loop
        self.catalog.close()
        os.close(self._lock)


class RootInUse(RuntimeError):
    pass


def _lock_root(root: str) -> int:
    """One service per root: two writers would interleave their appends. The kernel drops
    the lock when the process dies, even by SIGKILL, so a crash never leaves it behind."""
    descriptor = os.open(os.path.join(root, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RootInUse(f"another wendelin service is using {root}") from None
    return descriptor
