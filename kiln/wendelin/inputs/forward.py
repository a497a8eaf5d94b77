"""The fluentd forward protocol v1 server (TCP, optionally TLS): docs/protocols/fluentd-forward.md.

Every connection starts with HELO; the PING's shared-key digest tells which policy the client
belongs to (``forward_handshake``). Message, Forward, PackedForward and CompressedPackedForward
(gzip, zstd) are accepted and emitted to the router; ``{"ack": chunk}`` is sent only once the
chunk is fsynced, and a chunk id that was already committed is acknowledged again without
appending. A malformed message or a refusal closes its connection only, after the acks already
earned have been sent; a chunk that fails to commit gets no ack, and its connection is closed
at once. fluentd resends every chunk that got no ack.
"""

import asyncio
import logging
import secrets
import socket
import ssl
from dataclasses import dataclass, field

import msgpack

from kiln.common.connection_limits import ConnectionCap
from kiln.common.limits import BoundedExecutor, Busy
from kiln.wendelin import chunks, compression
from kiln.wendelin.inputs.forward_handshake import authenticate, shared_key_digest
from kiln.wendelin.policies import Policy, PolicyRegistry
from kiln.wendelin.refusals import Refusal, Unavailable
from kiln.wendelin.router import Router

log = logging.getLogger(__name__)


class ProtocolError(ValueError):
    """The peer broke the protocol; its connection is closed."""


_DECOMPRESSORS: dict[object, "compression.Decompress"] = {
    "gzip": compression.gunzip,
    "zstd": compression.unzstd,
}


@dataclass(slots=True)
class _Connection:
    peer: str
    nonce: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    auth_salt: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    policy: Policy | None = None
    anonymous: bool = False
    messages: int = 0
    entries: int = 0
    acks: int = 0
    duplicates: int = 0
    refusal: Refusal | None = None  # the first, which closed the connection

    def refused(self, refusal: Refusal) -> None:
        self.refusal = self.refusal or refusal

    def outcome(self, otherwise: str) -> str:
        """How the connection ended, for its log line: a refusal, or ``otherwise``.

        The forward answer to every refusal is the same, no ack and a closed connection,
        after which the client resends what it could not get acknowledged.
        """
        if self.refusal is None:
            return otherwise
        if isinstance(self.refusal, Unavailable):
            return f"closed without ack, retry later: {self.refusal}"
        return f"closed without ack: {self.refusal}"


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise ProtocolError(f"expected a string, got {type(value).__name__}")


class ForwardServer:
    def __init__(
        self,
        router: Router,
        policies: PolicyRegistry,
        max_message_bytes: int = 64 << 20,
        max_in_flight: int = 256,
        hostname: str | None = None,
        handshake_timeout: float = 10.0,
        max_handshake_bytes: int = 64 << 10,
        max_members: int = compression.DEFAULT_MAX_MEMBERS,
        max_record_depth: int = chunks.DEFAULT_MAX_DEPTH,
        max_connections: int = 512,
        decompressions: BoundedExecutor | None = None,
    ) -> None:
        self.router = router
        self.policies = policies
        self.max_message_bytes = max_message_bytes
        self.max_in_flight = max_in_flight
        self.max_handshake_bytes = max_handshake_bytes
        self.max_members = max_members
        self.max_record_depth = max_record_depth
        self.connections = ConnectionCap("forward", max_connections)
        # Decompression is CPU work: in a bounded pool, never on the event loop.
        self.decompressions = decompressions or BoundedExecutor("decompress", 1, 16)
        # out_forward refuses a PONG carrying its own self_hostname, and a fluentd on this
        # machine usually calls itself by the machine's name: so ours is never just that.
        self.hostname = hostname or f"wendelin@{socket.gethostname()}"
        self.handshake_timeout = handshake_timeout
        self._packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
        self._connections: set[asyncio.Task[None]] = set()

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> asyncio.Server:
        return await asyncio.start_server(
            self._serve, host, port, ssl=ssl_context, limit=1 << 20, backlog=512
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.connections.admit():  # logged by the cap
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peername = writer.get_extra_info("peername")
        connection = _Connection(peer=f"{peername[0]}:{peername[1]}" if peername else "?")
        in_flight: set[asyncio.Task[None]] = set()
        outcome = "closed by peer"
        try:
            writer.write(
                self._packer.pack(
                    [
                        "HELO",
                        {
                            "nonce": connection.nonce,
                            "auth": connection.auth_salt,
                            "keepalive": True,
                        },
                    ]
                )
            )
            await self._read_messages(reader, writer, connection, in_flight)
        except ProtocolError as error:
            outcome = f"closed: {error}"
        except Refusal as refusal:
            connection.refused(refusal)
        except TimeoutError:  # before OSError, of which it is a subclass
            outcome = f"closed: no handshake within {self.handshake_timeout} s of connecting"
        except (OSError, asyncio.IncompleteReadError) as error:  # includes TLS errors
            outcome = f"connection lost: {error}"
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            writer.close()
            self._connections.discard(task)
            self.connections.release()
            outcome = connection.outcome(outcome)
            if connection.messages or not outcome.startswith("closed by peer"):
                log.log(
                    logging.INFO if connection.refusal is None else logging.WARNING,
                    "forward %s policy=%s messages=%d entries=%d acks=%d duplicates=%d %s",
                    connection.peer,
                    connection.policy.name if connection.policy else "-",
                    connection.messages,
                    connection.entries,
                    connection.acks,
                    connection.duplicates,
                    outcome,
                )

    async def _read_messages(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: _Connection,
        in_flight: set[asyncio.Task[None]],
    ) -> None:
        unpacker = self._unpacker(authenticated=False)
        slots = asyncio.Semaphore(self.max_in_flight)
        # Absolute, from the connection on: reads do not extend it, so a client trickling
        # bytes cannot hold an unauthenticated connection open.
        handshake_deadline = asyncio.get_running_loop().time() + self.handshake_timeout
        while True:
            if not self._past_handshake(connection):
                async with asyncio.timeout_at(handshake_deadline):
                    data = await reader.read(1 << 18)
            else:
                data = await reader.read(1 << 18)
            if not data:
                return
            try:
                unpacker.feed(data)
            except msgpack.BufferFull:
                raise ProtocolError(self._too_large(connection)) from None
            try:
                while True:
                    for message in unpacker:
                        if message is None:
                            continue  # heartbeat
                        was_past = self._past_handshake(connection)
                        await self._handle(message, writer, connection, in_flight, slots)
                        if not was_past and self._past_handshake(connection):
                            # Authenticated: the rest is read with the full limits.
                            rest = unpacker.read_bytes(self.max_message_bytes)
                            unpacker = self._unpacker(authenticated=True)
                            unpacker.feed(rest)
                            break
                    else:
                        break
            except (ValueError, msgpack.UnpackException) as error:
                if isinstance(error, ProtocolError | Refusal):
                    raise
                raise ProtocolError(f"malformed message: {error}") from None

    @staticmethod
    def _past_handshake(connection: _Connection) -> bool:
        return connection.policy is not None or connection.anonymous

    def _too_large(self, connection: _Connection) -> str:
        if self._past_handshake(connection):
            return f"message larger than the limit of {self.max_message_bytes} bytes"
        return (
            f"more than {self.max_handshake_bytes} bytes before the handshake "
            "(send PING first; kiln wendelin serve --max-handshake-kib)"
        )

    def _unpacker(self, authenticated: bool) -> msgpack.Unpacker:
        """A reader of messages; before the handshake a small one.

        An unauthenticated peer gets a buffer the size of a PING and small structures: a
        64 MiB message, or a list of millions of empty maps, held before the PING was even
        checked, let anyone take the server's memory. With an anonymous-forward policy the
        first message is data, so the full limits apply from the start (that mode is for
        127.0.0.1 only).
        """
        # Strings decode with surrogateescape so that a record re-packs byte for byte (str stays
        # str, bin stays bin), and a str32 PackedForward blob turns back into its exact bytes.
        options: dict[str, int] = {"max_buffer_size": self.max_message_bytes}
        if not authenticated and not any(
            policy.record.anonymous_forward for policy in self.policies.all()
        ):
            small = self.max_handshake_bytes
            options = {
                "max_buffer_size": small,
                "max_str_len": small,
                "max_bin_len": small,
                "max_array_len": 16,
                "max_map_len": 16,
                "max_ext_len": small,
            }
        return msgpack.Unpacker(
            raw=False, unicode_errors="surrogateescape", strict_map_key=False, **options
        )

    async def _handle(
        self,
        message: object,
        writer: asyncio.StreamWriter,
        connection: _Connection,
        in_flight: set[asyncio.Task[None]],
        slots: asyncio.Semaphore,
    ) -> None:
        if not isinstance(message, list) or len(message) < 2:
            raise ProtocolError("a message must be an array [tag, ...]")
        if message[0] == "PING" and connection.policy is None:
            self._answer_ping(message, writer, connection)
            return
        tag = message[0]
        if not isinstance(tag, str):
            raise ProtocolError("the tag must be a string")
        if connection.policy is None:
            connection.policy = self._anonymous_policy(tag)
            connection.anonymous = True
        chunk, option = await self._decode(message)
        connection.messages += 1
        connection.entries += chunk.count
        chunk_id = option.get("chunk") if option else None
        if chunk_id is not None and not isinstance(chunk_id, str | bytes):
            raise ProtocolError("option chunk must be a string")
        retry_id = None if chunk_id is None else _as_bytes(chunk_id)
        durable = self.router.emit(connection.policy, tag, chunk, retry_id)
        await slots.acquire()
        task = asyncio.create_task(self._ack(durable, chunk_id, writer, connection, slots))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    async def _ack(
        self,
        durable: asyncio.Future[bool],
        chunk_id: str | bytes | None,
        writer: asyncio.StreamWriter,
        connection: _Connection,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            appended = await durable
        except Refusal as refusal:  # a failed commit: no ack, the client resends the chunk
            connection.refused(refusal)
            writer.close()
            return
        finally:
            slots.release()
        if not appended:
            connection.duplicates += 1
        if chunk_id is not None and not writer.is_closing():
            writer.write(self._packer.pack({"ack": chunk_id}))
            connection.acks += 1

    async def _decode(self, message: list) -> tuple[chunks.Chunk, dict | None]:
        """The entries of a message in any of the four modes, validated, and its options."""
        second = message[1]
        depth = self.max_record_depth
        try:
            if isinstance(second, list):  # Forward
                option = self._option(message, 3)
                return chunks.pack_entries(second, depth), option
            if isinstance(second, str | bytes):  # PackedForward, maybe compressed
                option = self._option(message, 3)
                blob = _as_bytes(second)
                compressed = option.get("compressed", "text") if option else "text"
                decompress = _DECOMPRESSORS.get(compressed)
                if decompress is not None:
                    return await self._decompressed(decompress, blob), option
                if compressed != "text":
                    raise ProtocolError(f"unknown compression {compressed!r}")
                return chunks.parse_entries(blob, depth), option
            # Message: [tag, time, record, option?]
            option = self._option(message, 4)
            if len(message) < 3:
                raise ProtocolError("a Message-mode message is [tag, time, record, option?]")
            return chunks.pack_entries([[second, message[2]]], depth), option
        except (chunks.ChunkError, compression.DecompressionError) as error:
            raise ProtocolError(str(error)) from None

    async def _decompressed(
        self, decompress: "compression.Decompress", blob: bytes
    ) -> chunks.Chunk:
        """Decompress and check in the decompression pool; Unavailable when it is full
        (the connection is closed without ack, and the client resends later)."""

        def work() -> chunks.Chunk:
            data = decompress(blob, self.max_message_bytes, self.max_members)
            return chunks.parse_entries(data, self.max_record_depth)

        try:
            return await self.decompressions.run(work)
        except Busy as full:
            raise Unavailable(f"overloaded, {full}", retry_after=2) from None

    @staticmethod
    def _option(message: list, option_position: int) -> dict | None:
        if len(message) > option_position:
            raise ProtocolError(f"too many elements in a message ({len(message)})")
        if len(message) < option_position:
            return None
        option = message[option_position - 1]
        if option is None:
            return None
        if not isinstance(option, dict):
            raise ProtocolError("the option must be a map")
        return option

    def _anonymous_policy(self, tag: str) -> Policy:
        for policy in self.policies.all():
            if policy.record.anonymous_forward and policy.accepts(tag):
                return policy
        raise ProtocolError(f"no handshake (PING), and no anonymous-forward policy takes {tag!r}")

    def _answer_ping(
        self, message: list, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        if len(message) != 6:
            raise ProtocolError("PING must have 6 elements")
        _, hostname, salt, digest, username, password_digest = (
            _as_bytes(part) if index else part for index, part in enumerate(message)
        )
        if not digest.isascii():  # a hex digest; compare_digest takes ASCII text only
            raise ProtocolError("PING's shared key digest must be hexadecimal text")
        policy, reason = authenticate(
            self.policies.all(),
            connection.nonce,
            connection.auth_salt,
            hostname,
            salt,
            digest.decode(errors="replace"),
            username,
            password_digest,
        )
        if policy is None:
            writer.write(self._packer.pack(["PONG", False, reason, "", ""]))
            raise ProtocolError(f"handshake refused: {reason}")
        connection.policy = policy
        proof = shared_key_digest(salt, self.hostname.encode(), connection.nonce, policy.shared_key)
        writer.write(self._packer.pack(["PONG", True, "", self.hostname, proof]))
