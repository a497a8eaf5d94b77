"""Data arrays: Zarr v3 arrays appended atomically, with a min/max pyramid (see store.py)."""

from kiln.wendelin.arrays.store import (
    ArrayError,
    ArrayStore,
    DataArray,
    Provenance,
    UnknownArray,
    Window,
    check_array_name,
    check_new_array,
)

__all__ = [
    "ArrayError",
    "ArrayStore",
    "DataArray",
    "Provenance",
    "UnknownArray",
    "Window",
    "check_array_name",
    "check_new_array",
]
