"""What the service needs of data arrays before the first array is touched, without numpy or
Zarr: the errors, the dtype kinds, and an ArrayStore opened at first use.

`kiln wendelin serve` imports this, not store.py: numpy, Zarr (and through the
transformations Dask and SciPy) take seconds to import on a small or emulated CPU, and a
service with no array yet never needs them (an appliance's first boot waits for them).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.wendelin.arrays.store import ArrayStore

# Dtype kinds an array may hold: bool, integers, floats, complex. Never objects or strings.
NUMERIC_KINDS = "biufc"
# Kinds whose arrays keep a min/max pyramid (a chart on the array's page).
PYRAMID_KINDS = "iuf"


class UnknownArray(KeyError):
    def __str__(self) -> str:  # KeyError's own quotes the message
        return str(self.args[0]) if self.args else "unknown array"


class ArrayError(ValueError):
    """Bad dtype, shape mismatch, bad name or selection: the message says which."""


class LazyArrayStore:
    """The ArrayStore of a directory, opened (numpy and Zarr imported) at its first use."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._store: ArrayStore | None = None
        self._lock = threading.Lock()

    def holds_arrays(self) -> bool:
        """Whether any array may exist, answered without opening the store."""
        return os.path.isdir(self.directory) and any(os.scandir(self.directory))

    def opened(self) -> ArrayStore:
        with self._lock:
            if self._store is None:
                from kiln.wendelin.arrays.store import ArrayStore

                self._store = ArrayStore(self.directory)
            return self._store

    def __getattr__(self, name: str) -> Any:  # names(), open(), create()...: the real store's
        return getattr(self.opened(), name)
