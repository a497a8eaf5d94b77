"""The WAV decoder alone: headers in pieces, torn frames, other files refused clearly."""

import re
import struct

import numpy as np
import pytest

from kiln.testing.audio import samples, wav_bytes
from kiln.wendelin.transform import wav

pytestmark = pytest.mark.unit


def test_header_in_pieces_then_whole_frames() -> None:
    frames = samples(100, channels=2)
    blob = wav_bytes(frames, rate=8000)
    for cut in range(44):
        assert wav.parse_header(blob[:cut]) is None  # wait for more, no error
    form = wav.parse_header(blob[:44])
    assert form == wav.WavFormat(2, 8000, 16, False, 44, 400)
    assert form.frame_bytes == 4 and form.dtype == np.dtype("<i2")
    np.testing.assert_array_equal(wav.decode(blob[44:], form), frames)
    with pytest.raises(ValueError, match="not whole frames"):
        wav.decode(blob[44:47], form)


def test_unknown_length_and_trailing_chunks() -> None:
    frames = samples(10, channels=1)
    streaming = wav.parse_header(wav_bytes(frames, streaming=True))
    assert streaming is not None and streaming.data_size is None
    assert streaming.data_end(10_000) == 10_000
    known = wav.parse_header(wav_bytes(frames) + b"LIST\x04\x00\x00\x00abcd")
    assert known is not None and known.data_end(10_000) == 44 + 20  # LIST is not samples


def test_24_bit_samples_widen_to_int32() -> None:
    values = np.array([[-8388608, 8388607], [-1, 1]], dtype=np.int32)
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in values.ravel())
    form = wav.WavFormat(2, 48000, 24, False, 0, None)
    np.testing.assert_array_equal(wav.decode(raw, form), values)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"\x89PNG\r\n\x1a\n", "it starts with b'\\x89PNG', not b'RIFF'"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "a RIFF b'AVI ' file"),
        (
            b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00"
            + struct.pack("<HHIIHH", 0x55, 2, 44100, 0, 4, 16),
            "format tag 0x55 is compressed",
        ),
    ],
)
def test_other_files_are_refused_with_what_they_are(head: bytes, message: str) -> None:
    with pytest.raises(wav.NotWav, match=re.escape(message)):
        wav.parse_header(head)
