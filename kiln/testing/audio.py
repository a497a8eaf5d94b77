"""WAV bytes and record chunks for the transformation tests and benchmarks."""

import struct

import msgpack
import numpy as np

from kiln.wendelin import eventtime


def samples(frames: int, channels: int = 2, seed: int = 7) -> np.ndarray:
    """Deterministic int16 test audio: a tone per channel plus noise, frames x channels."""
    rng = np.random.default_rng(seed)
    time = np.arange(frames)[:, None]
    tones = 8000 * np.sin(2 * np.pi * time * (440 + 220 * np.arange(channels)) / 44_100)
    noise = rng.integers(-2000, 2000, size=(frames, channels))
    return (tones + noise).astype("<i2")


def wav_bytes(frames: np.ndarray, rate: int = 44_100, streaming: bool = False) -> bytes:
    """A 16-bit PCM WAV file of ``frames`` (frames x channels int16); ``streaming``: the
    sizes a live recorder writes before it knows the length (0xFFFFFFFF)."""
    channels = frames.shape[1]
    data = frames.astype("<i2").tobytes()
    size = 0xFFFFFFFF if streaming else len(data)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    riff_size = 0xFFFFFFFF if streaming else 4 + 8 + len(fmt) + 8 + len(data)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", size)
        + data
    )


def record_chunk(records: list[dict], start: float = 1_700_000_000.0) -> bytes:
    """Concatenated msgpack ``[EventTime, record]`` entries, one second apart."""
    return b"".join(
        msgpack.packb([eventtime.pack(start + number), record])
        for number, record in enumerate(records)
    )
