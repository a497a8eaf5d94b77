"""A small fluentd forward-protocol client: handshake, every mode, acks, heartbeats.

It speaks what fluentd's out_forward speaks (docs/protocols/fluentd-forward.md, "What fluentd
1.16 sends") and is used by the tests and the benchmark as a peer (fluent-logger sends Message
mode without acks or handshake).
"""

import base64
import gzip
import os
import secrets
import socket
import ssl
import struct

import msgpack
import zstandard

from kiln.wendelin.inputs.forward_handshake import (
    anonymous_password_digest,
    password_digest,
    shared_key_digest,
)


class HandshakeFailed(Exception):
    pass


def new_chunk_id() -> str:
    """Like out_forward: base64 of 16 random bytes, trailing newline included."""
    return base64.encodebytes(secrets.token_bytes(16)).decode()


class ForwardClient:
    """One connection. ``shared_key`` None skips the handshake (as fluent-logger does)."""

    def __init__(
        self,
        host: str,
        port: int,
        shared_key: str | None = None,
        username: str = "",
        password: str | None = None,
        hostname: str = "forward-client",
        tls: ssl.SSLContext | None = None,
        timeout: float = 30.0,
        salted_anonymous_password: bool = True,
    ) -> None:
        self.hostname = hostname
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket = tls.wrap_socket(raw, server_hostname=host) if tls else raw
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self._packer = msgpack.Packer(use_bin_type=True)
        self.server_hostname: str | None = None
        helo = self.read()
        if not (isinstance(helo, list) and helo[0] == "HELO"):
            raise HandshakeFailed(f"expected HELO, got {helo!r}")
        if shared_key is not None:
            self._handshake(helo[1], shared_key, username, password, salted_anonymous_password)

    def _handshake(
        self,
        options: dict,
        shared_key: str,
        username: str,
        password: str | None,
        salted_anonymous_password: bool,
    ) -> None:
        nonce = options["nonce"]
        auth_salt = options.get("auth") or b""
        nonce = nonce.encode() if isinstance(nonce, str) else nonce
        auth_salt = auth_salt.encode() if isinstance(auth_salt, str) else auth_salt
        salt = os.urandom(16)
        digest = shared_key_digest(salt, self.hostname.encode(), nonce, shared_key)
        if password is not None:
            proof = password_digest(auth_salt, username.encode(), password)
        elif auth_salt and salted_anonymous_password:
            proof = anonymous_password_digest(auth_salt)  # what out_forward sends without <user>
        else:
            proof = ""
        self.write(["PING", self.hostname, salt, digest, username, proof])
        pong = self.read()
        if not isinstance(pong, list) or pong[0] != "PONG":
            raise HandshakeFailed(f"expected PONG, got {pong!r}")
        if not pong[1]:
            raise HandshakeFailed(pong[2])
        self.server_hostname = pong[3]
        expected = shared_key_digest(salt, pong[3].encode(), nonce, shared_key)
        if pong[3] == self.hostname or pong[4] != expected:
            raise HandshakeFailed("the server did not prove it knows the shared key")

    # -- wire ---------------------------------------------------------------------------------

    def write(self, message: object) -> None:
        self.socket.sendall(self._packer.pack(message))

    def write_raw(self, data: bytes) -> None:
        self.socket.sendall(data)

    def read(self) -> object:
        """The next msgpack value from the server; EOFError when it closed the connection."""
        for value in self._unpacker:
            return value
        while True:
            data = self.socket.recv(1 << 16)
            if not data:
                raise EOFError("connection closed by the server")
            self._unpacker.feed(data)
            for value in self._unpacker:
                return value

    def read_ack(self) -> str | bytes:
        answer = self.read()
        if not isinstance(answer, dict) or "ack" not in answer:
            raise ValueError(f"expected an ack, got {answer!r}")
        return answer["ack"]

    def heartbeat(self) -> None:
        self.write_raw(b"\xc0")  # nil

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> "ForwardClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- modes --------------------------------------------------------------------------------

    def send_message(self, tag: str, time: object, record: dict, chunk: str | None = None) -> None:
        self.write([tag, time, record, {"chunk": chunk}] if chunk else [tag, time, record])

    def send_forward(self, tag: str, entries: list, chunk: str | None = None) -> None:
        option = {"size": len(entries)}
        if chunk:
            option["chunk"] = chunk
        self.write([tag, entries, option])

    def send_packed(
        self,
        tag: str,
        blob: bytes,
        chunk: str | None = None,
        compressed: str = "text",
        size: int | None = None,
        as_str: bool = True,
    ) -> None:
        """PackedForward; ``as_str`` sends the blob as str32 like fluentd (Fluent Bit: bin)."""
        if compressed == "gzip":
            blob = gzip.compress(blob)
        elif compressed == "zstd":
            blob = zstandard.ZstdCompressor().compress(blob)
        option: dict[str, object] = {"compressed": compressed}
        if size is not None:
            option["size"] = size
        if chunk:
            option["chunk"] = chunk
        self.write_raw(pack_packed_forward(tag, blob, option, as_str))


def pack_packed_forward(tag: str, blob: bytes, option: dict, as_str: bool = True) -> bytes:
    """The bytes of one PackedForward message, with the blob as str32 or bin32."""
    head = msgpack.packb(tag)
    marker = b"\xdb" if as_str else b"\xc6"  # str32 / bin32, as fluentd always uses 32 bits
    return (
        b"\x93"
        + head
        + marker
        + struct.pack(">I", len(blob))
        + blob
        + msgpack.packb(option, use_bin_type=True)
    )
