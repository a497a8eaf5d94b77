"""Decompress CompressedPackedForward blobs with a bound on the output (no zip bombs)."""

import zlib

import zstandard


class DecompressionError(ValueError):
    pass


def gunzip(blob: bytes, limit: int) -> bytes:
    """fluentd appends one gzip member per write, so read every member, not just the first."""
    out = bytearray()
    while blob:
        decompressor = zlib.decompressobj(wbits=31)
        try:
            out += decompressor.decompress(blob, limit + 1 - len(out))
        except zlib.error as error:
            raise DecompressionError(f"bad gzip data: {error}") from None
        if len(out) > limit:
            raise DecompressionError(f"decompressed chunk is larger than {limit} bytes")
        if not decompressor.eof:
            raise DecompressionError("truncated gzip data")
        blob = decompressor.unused_data
    return bytes(out)


def unzstd(blob: bytes, limit: int) -> bytes:
    """Every zstd frame, as for gzip members; a truncated frame is an error, not less data."""
    out = bytearray()
    while blob:
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        position = 0
        # No output bound in this API: feed small pieces so a bomb stops early (a 1 KiB piece
        # yields at most 32 MiB, zstd's RLE-block worst case).
        while position < len(blob) and not decompressor.eof:
            try:
                out += decompressor.decompress(blob[position : position + 1024])
            except zstandard.ZstdError as error:
                raise DecompressionError(f"bad zstd data: {error}") from None
            position += 1024
            if len(out) > limit:
                raise DecompressionError(f"decompressed chunk is larger than {limit} bytes")
        if not decompressor.eof:
            raise DecompressionError("truncated zstd data")
        blob = decompressor.unused_data + blob[position:]
    return bytes(out)
