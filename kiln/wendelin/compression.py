"""Decompress CompressedPackedForward blobs with bounds on the output and on the work.

fluentd appends one gzip member (or zstd frame) per write, so a blob is a series of members,
and each is read.  Two bounds keep a hostile blob cheap:

- the output stops at ``limit`` bytes (no zip bombs);
- a blob holds at most ``max_members`` members, and each member costs work in proportion to
  its own size only: the input is fed in small pieces from a view, never copied from a
  member's end to the blob's end (which made a megabyte of empty members quadratic).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol

import zstandard

# Members per message: fluentd writes one per buffer append; thousands are plenty.
DEFAULT_MAX_MEMBERS = 10_000

# Input fed per call.  What stays unread after a member ends is at most one piece, so a
# piece bounds the copy each member costs.  A 4 KiB gzip piece inflates to at most about
# 4 MiB; zstd's worst case (RLE blocks) is far higher per byte, so its pieces are smaller.
_GZIP_PIECE = 4096
_ZSTD_PIECE = 1024


class DecompressionError(ValueError):
    pass


# gunzip and unzstd: (blob, output limit, max members) -> the decompressed bytes.
Decompress = Callable[[bytes, int, int], bytes]


class _Decompressor(Protocol):
    eof: bool
    unused_data: bytes

    def decompress(self, data: memoryview) -> bytes: ...


def _members(
    blob: bytes,
    limit: int,
    max_members: int,
    new_decompressor: Callable[[], _Decompressor],
    piece_size: int,
    name: str,
    errors: tuple[type[Exception], ...],
) -> bytes:
    view = memoryview(blob)
    out = bytearray()
    start = members = 0
    while start < len(view):
        members += 1
        if members > max_members:
            raise DecompressionError(f"more than {max_members} {name} members in one message")
        decompressor = new_decompressor()
        position = start
        while not decompressor.eof and position < len(view):
            piece = view[position : position + piece_size]
            position += len(piece)
            try:
                out += decompressor.decompress(piece)
            except errors as error:
                raise DecompressionError(f"bad {name} data: {error}") from None
            if len(out) > limit:
                raise DecompressionError(f"decompressed chunk is larger than {limit} bytes")
        if not decompressor.eof:
            raise DecompressionError(f"truncated {name} data")
        start = position - len(decompressor.unused_data)
    return bytes(out)


def gunzip(blob: bytes, limit: int, max_members: int = DEFAULT_MAX_MEMBERS) -> bytes:
    """Every gzip member of ``blob``; a truncated member is an error, not less data."""
    return _members(
        blob,
        limit,
        max_members,
        lambda: zlib.decompressobj(wbits=31),
        _GZIP_PIECE,
        "gzip",
        (zlib.error,),
    )


def unzstd(blob: bytes, limit: int, max_members: int = DEFAULT_MAX_MEMBERS) -> bytes:
    """Every zstd frame of ``blob``, as for gzip members."""
    context = zstandard.ZstdDecompressor()  # one context: making one per frame is slow
    return _members(
        blob,
        limit,
        max_members,
        context.decompressobj,
        _ZSTD_PIECE,
        "zstd",
        (zstandard.ZstdError,),
    )
