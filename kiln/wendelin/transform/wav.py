"""WAV (RIFF/WAVE) bytes into PCM frames, a piece at a time.

A WAV stream arrives in chunks: the header may come alone in the first one and the samples in
later ones, and the last chunk may end in the middle of a frame. ``parse_header`` answers
None while the header is incomplete, and ``decode`` takes whole frames only, so a torn frame
is left for later instead of being decoded wrong.
"""

import struct
from dataclasses import dataclass

import numpy as np

PCM = 1
IEEE_FLOAT = 3
EXTENSIBLE = 0xFFFE
# Headers are small; a stream whose data chunk starts later than this is not one we decode.
MAX_HEADER_BYTES = 1 << 20
# A data size a recorder writes when it does not know the length yet (streaming).
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


class NotWav(ValueError):
    """The bytes are not a WAV stream this decoder reads; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class WavFormat:
    channels: int
    sample_rate: int
    bits: int  # per sample, as stored
    float: bool  # IEEE float samples (else integer PCM)
    data_start: int  # stream offset of the first sample byte
    data_size: int | None  # bytes of samples, None when the header does not know (streaming)

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8

    @property
    def dtype(self) -> np.dtype:
        """The array's dtype: the samples' own (24-bit integers widen to int32)."""
        if self.float:
            return np.dtype("<f4" if self.bits == 32 else "<f8")
        return np.dtype({8: "u1", 16: "<i2", 24: "<i4", 32: "<i4"}[self.bits])

    def data_end(self, available: int) -> int:
        """Where the samples end, given ``available`` stream bytes: trailing chunks after a
        known data size (LIST, id3) are not samples."""
        if self.data_size is None:
            return available
        return min(available, self.data_start + self.data_size)

    def attributes(self) -> dict[str, object]:
        return {
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "bits_per_sample": self.bits,
            "sample_format": "float" if self.float else "pcm",
        }


def parse_header(head: bytes) -> WavFormat | None:
    """The format of the stream starting with ``head``; None if more bytes are needed.

    Raises NotWav at once when the bytes seen so far cannot start a WAV stream.
    """
    if len(head) >= 4 and head[:4] != b"RIFF":
        raise NotWav(f"not a WAV stream: it starts with {head[:4]!r}, not b'RIFF'")
    if len(head) >= 12 and head[8:12] != b"WAVE":
        raise NotWav(f"not a WAV stream: a RIFF {head[8:12]!r} file, not b'WAVE'")
    position = 12
    found: tuple[int, int, int, bool] | None = None
    while position + 8 <= len(head):
        chunk_id, size = struct.unpack_from("<4sI", head, position)
        body = position + 8
        if chunk_id == b"fmt ":
            if body + min(size, 40) > len(head):
                return None
            found = _format(head[body : body + size])
        elif chunk_id == b"data":
            if found is None:
                raise NotWav("not a WAV stream this decoder reads: data chunk before fmt chunk")
            channels, rate, bits, is_float = found
            known = None if size in _UNKNOWN_SIZES else size
            return WavFormat(channels, rate, bits, is_float, body, known)
        position = body + size + (size & 1)  # chunks are padded to even sizes
        if position > MAX_HEADER_BYTES:
            raise NotWav(f"no data chunk in the first {MAX_HEADER_BYTES} bytes")
    if len(head) > MAX_HEADER_BYTES:
        raise NotWav(f"no data chunk in the first {MAX_HEADER_BYTES} bytes")
    return None


def _format(fmt: bytes) -> tuple[int, int, int, bool]:
    if len(fmt) < 16:
        raise NotWav(f"not a WAV stream this decoder reads: fmt chunk of {len(fmt)} bytes")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # the sub-format GUID's first two bytes
    is_float = tag == IEEE_FLOAT
    if tag not in (PCM, IEEE_FLOAT):
        raise NotWav(f"WAV format tag {tag:#x} is compressed: only PCM and float are decoded")
    allowed = (32, 64) if is_float else (8, 16, 24, 32)
    if bits not in allowed or channels < 1:
        raise NotWav(f"WAV with {channels} channel(s) of {bits}-bit samples is not decoded")
    if block_align != channels * bits // 8:
        raise NotWav(f"WAV block align {block_align} does not fit {channels} x {bits} bits")
    return channels, rate, bits, is_float


def decode(data: bytes, wav: WavFormat) -> np.ndarray:
    """Whole frames of ``data`` (which must start on a frame) as rows x channels.

    The caller passes whole frames only; a torn trailing frame is its to keep for later.
    """
    if len(data) % wav.frame_bytes:
        raise ValueError(f"{len(data)} bytes are not whole frames of {wav.frame_bytes}")
    if wav.bits == 24:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        samples = np.where(values & 0x800000, values - (1 << 24), values).astype(np.int32)
    else:
        samples = np.frombuffer(data, dtype=wav.dtype)
    return samples.reshape(-1, wav.channels)
