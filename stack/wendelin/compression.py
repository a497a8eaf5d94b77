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
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
        out = reader.read(limit + 1)
        while len(out) <= limit:
            more = reader.read(limit + 1 - len(out))
            if not more:
                break
            out += more
    except zstandard.ZstdError as error:
        raise DecompressionError(f"bad zstd data: {error}") from None
    if len(out) > limit:
        raise DecompressionError(f"decompressed chunk is larger than {limit} bytes")
    return out
