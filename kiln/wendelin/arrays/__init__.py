"""Data arrays: Zarr v3 arrays appended atomically, with a min/max pyramid (see store.py).

The store's names load store.py (numpy, Zarr) when first asked for, not when this package is
imported: the service starts without them (see basics.py)."""

from typing import Any

from kiln.wendelin.arrays.basics import ArrayError, UnknownArray

_FROM_STORE = {
    "ArrayStore",
    "DataArray",
    "Provenance",
    "Window",
    "check_array_name",
    "check_new_array",
}

__all__ = ["ArrayError", "UnknownArray", *sorted(_FROM_STORE)]


def __getattr__(name: str) -> Any:
    if name in _FROM_STORE:
        from kiln.wendelin.arrays import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
