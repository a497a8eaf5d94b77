"""FFT in windows: the magnitude spectrum of one channel, one row per window, with Dask.

Window ``k`` covers frames ``[k * hop, k * hop + window)`` of the channel, multiplied by the
taper; its row holds ``|rfft|`` (``window // 2 + 1`` bins, bin ``i`` at ``i * rate / window``
Hz). A row depends only on its own frames, so rows computed batch by batch, as frames
arrive, are exactly the rows of one computation over the whole channel.
"""

import dask.array as da
import numpy as np

from kiln.wendelin.transform.compute import Compute

TAPERS = ("hann", "none")
# Windows per Dask task: big enough that scheduling costs little beside the FFTs.
WINDOWS_PER_TASK = 256


def taper(name: str, window: int) -> np.ndarray:
    if name == "hann":
        return np.hanning(window)
    if name == "none":
        return np.ones(window)
    raise ValueError(f"unknown taper {name!r}: use one of {', '.join(TAPERS)}")


def window_count(frames: int, window: int, hop: int) -> int:
    """Whole windows that fit in ``frames`` frames."""
    return 0 if frames < window else (frames - window) // hop + 1


def spectrum(
    samples: np.ndarray, window: int, hop: int, taper_name: str, compute: Compute
) -> np.ndarray:
    """The rows of every whole window of ``samples`` (frame 0 starts window 0)."""
    count = window_count(len(samples), window, hop)
    bins = window // 2 + 1
    if count == 0:
        return np.empty((0, bins), dtype=np.float64)
    # Rows of the windows as a view (no copy); Dask slices it into tasks of whole windows.
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), window)
    windows = da.from_array(frames[::hop][:count], chunks=(WINDOWS_PER_TASK, window))
    rows = windows.map_blocks(
        _magnitudes, taper(taper_name, window), chunks=(windows.chunks[0], (bins,)), dtype=float
    )
    return compute.array(rows)


def _magnitudes(block: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.rfft(block * weights, axis=1))


def reference(samples: np.ndarray, window: int, hop: int, taper_name: str) -> np.ndarray:
    """The same rows in one plain numpy computation (what tests and benchmarks compare to)."""
    count = window_count(len(samples), window, hop)
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), window)
    return np.abs(np.fft.rfft(frames[::hop][:count] * taper(taper_name, window), axis=1))
