"""Data arrays: named, chunked N-dimensional arrays stored as Zarr v3, appended atomically.

Layout, under any Zarr v3 store (a local directory by default, an object store through
``zarr.storage.FsspecStore``), plain Zarr that any Zarr v3 reader opens:

* ``<name>/``: a group, one per data array;
* ``<name>/data``: the array itself. Its ``zarr.json`` is the commit point: it holds the
  committed shape, the user attributes and, under the reserved attribute ``kiln``, the owning
  policy, the provenance (source stream range), the ``consumed`` cursor and the tail of the
  min/max pyramid;
* ``<name>/pyramid/<k>`` (numeric arrays of 1 or 2 dimensions): min and max of each block of
  ``8**k`` rows (per column for 2-D arrays), for plotting windows of any size in
  milliseconds. Only complete blocks are stored there; the last, partial block of every level
  (the "tail") is in the data's ``zarr.json``, committed with the shape. Level arrays have a
  fixed, huge shape, so their own metadata never changes.

An append writes in this order: the new rows' chunks (beyond the committed shape: no reader
looks there), the pyramid's newly complete blocks (beyond the committed ones, likewise), then
one write of ``data/zarr.json`` with the new shape, ``consumed`` and the pyramid tail. That
write is atomic (an object store's PUT; on a local disk a temporary file, fsync, rename), so a
reader sees the array before or after the append, never between, and a writer killed at any
point leaves the last committed state. Rewriting the last, partial chunk of the committed data
is safe for the same reason: the chunk object is replaced at once, its committed rows
unchanged. Appends to one array are serialized in this process (one writing process per store:
the service).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.sync import sync

from kiln.common.durable import write_atomically
from kiln.wendelin.arrays.basics import (
    NUMERIC_KINDS,
    PYRAMID_KINDS,
    ArrayError,
    UnknownArray,
)
from kiln.wendelin.streams import check_stream_name

DATA = "data"
PYRAMID = "pyramid"
METADATA = "zarr.json"
# The reserved attribute holding what kiln keeps beside the user's attributes.
KILN = "kiln"
# Each pyramid level summarizes blocks of FACTOR times more rows than the level below.
FACTOR = 8
LEVELS = 12  # 8**12 rows in a block: beyond any array one machine appends to
LEVEL_ROWS = 2**53  # the fixed length of every level array (only the committed part is read)
LEVEL_CHUNK_BYTES = 256 << 10  # small chunks: a window reads a few thousand entries
# Columns of a 2-D array kept in the pyramid: its tail (2 values per column and level) is in
# every commit's metadata. Wider arrays (spectra) have windows of raw rows only.
PYRAMID_COLUMNS = 32
WINDOW_RAW_ROWS = 1 << 20  # rows a window may read raw, for arrays without a pyramid
# Default chunk size along axis 0: rows of about this many bytes, uncompressed, so that reads
# run at disk speed (sensor and audio samples barely compress).
CHUNK_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class Provenance:
    """The stream range an array was computed from."""

    stream: str  # the source stream's name
    start: int  # first byte offset of the stream range the array came from
    stop: int  # offset consumed so far (exclusive) == DataArray.consumed


@dataclass(frozen=True, slots=True)
class Window:
    """Min and max per bucket of ``step`` rows, over rows [start, stop) of one column."""

    start: int
    stop: int
    step: int
    level: int
    minimum: np.ndarray
    maximum: np.ndarray


def check_array_name(name: str) -> str:
    """Names follow the streams' rules (letters, digits, ``._-``, no ``..``)."""
    try:
        return check_stream_name(name).replace("stream", "array")
    except ValueError as bad:
        raise ArrayError(str(bad).replace("a stream", "an array")) from None


class DurableLocalStore(zarr.storage.LocalStore):
    """A local directory whose every write is a durable, atomic replace (fsync then rename).

    Zarr's LocalStore already renames a temporary file into place, but never fsyncs: after a
    power loss the committed metadata could point at chunks that never reached the disk.
    """

    async def _set(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        if exclusive and (self.root / key).exists():
            raise FileExistsError(key)
        data = value.as_buffer_like()
        await asyncio.to_thread(write_atomically, self.root / key, data)


class _StagedMetadata(zarr.storage.WrapperStore[Store]):
    """Holds back every ``zarr.json`` write (shown to this writer only) until ``commit``.

    Chunks go straight to the wrapped store; so Zarr's own resize and attribute updates can
    be used on an append without a reader seeing the new shape before the chunks are there.
    """

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.staged: dict[str, Buffer] = {}

    def _with_store(self, store: Store) -> _StagedMetadata:
        other = _StagedMetadata(store)
        other.staged = self.staged
        return other

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if key in self.staged and byte_range is None:
            return self.staged[key]
        return await self._store.get(key, prototype, byte_range)

    async def set(self, key: str, value: Buffer) -> None:
        if key.rsplit("/", 1)[-1] == METADATA:
            self.staged[key] = value
        else:
            await self._store.set(key, value)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        for key, value in values:
            await self.set(key, value)

    async def commit(self) -> None:
        for key, value in self.staged.items():
            await self._store.set(key, value)
        self.staged.clear()


def _open_store(location: str | os.PathLike[str] | Store) -> Store:
    if isinstance(location, Store):
        return location
    Path(location).mkdir(mode=0o700, parents=True, exist_ok=True)
    return DurableLocalStore(location)


def _json_number(value: Any) -> Any:
    """JSON has no NaN nor infinities: spelled as Zarr spells fill values."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _from_json_number(value: Any) -> Any:
    return float(value) if isinstance(value, str) else value


def _encode(values: np.ndarray) -> Any:
    if values.ndim == 0:
        return _json_number(values.item())
    return [_encode(item) for item in values]


class ArrayStore:
    """Every data array of one service, under one Zarr v3 store."""

    def __init__(self, location: str | os.PathLike[str] | Store) -> None:
        """A directory (the embedded default is <wendelin root>/arrays) or any Zarr v3 store
        (an object store through zarr.storage.FsspecStore): the same code for both."""
        self.store = _open_store(location)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(name, threading.Lock())

    def _exists(self, name: str) -> bool:
        return sync(self.store.exists(f"{name}/{DATA}/{METADATA}"))

    def create(
        self,
        name: str,
        dtype: np.typing.DTypeLike,
        *,
        inner_shape: tuple[int, ...] = (),
        chunk_rows: int | None = None,
        attributes: dict | None = None,
        policy: str | None = None,
        source: Provenance | None = None,
        exist_ok: bool = False,
    ) -> DataArray:
        """An empty array of rows shaped ``inner_shape``; with ``exist_ok``, the existing one
        (if its dtype and inner shape are these)."""
        dtype, inner_shape, attributes = check_new_array(name, dtype, inner_shape, attributes)
        with self._lock(name):
            if self._exists(name):
                if not exist_ok:
                    raise ArrayError(f"array {name!r} already exists")
                array = self.open(name)
                if array.dtype != dtype or array.shape[1:] != inner_shape:
                    raise ArrayError(
                        f"array {name!r} exists with dtype {array.dtype.str} and rows shaped "
                        f"{array.shape[1:]}, not {dtype.str} and {inner_shape}"
                    )
                return array
            row_bytes = dtype.itemsize * math.prod(inner_shape)
            rows = chunk_rows or max(1, CHUNK_BYTES // row_bytes)
            if rows < 1:
                raise ArrayError(f"chunk_rows must be at least 1, not {rows}")
            pyramid = dtype.kind in PYRAMID_KINDS and (
                inner_shape == () or (len(inner_shape) == 1 and inner_shape[0] <= PYRAMID_COLUMNS)
            )
            level_chunk = max(1, LEVEL_CHUNK_BYTES // (2 * row_bytes))
            kiln = {
                "policy": policy,
                "source": None if source is None else [source.stream, source.start, source.stop],
                "consumed": 0 if source is None else source.stop,
                "tail": [None] * LEVELS if pyramid else None,
            }
            # The group and the pyramid first: the data's metadata, written last, makes the
            # array exist (an interrupted create leaves nothing that `names` lists).
            zarr.create_group(self.store, path=name, overwrite=True)
            if pyramid:
                for level in range(1, LEVELS + 1):
                    zarr.create_array(
                        self.store,
                        name=f"{name}/{PYRAMID}/{level}",
                        shape=(LEVEL_ROWS, 2, *inner_shape),
                        chunks=(level_chunk, 2, *inner_shape),
                        dtype=dtype,
                        compressors=None,
                        fill_value=0,
                        overwrite=True,
                    )
            zarr.create_array(
                self.store,
                name=f"{name}/{DATA}",
                shape=(0, *inner_shape),
                chunks=(rows, *inner_shape),
                dtype=dtype,
                compressors=None,
                fill_value=0,
                attributes={**attributes, KILN: kiln},
                overwrite=True,
            )
            return self.open(name)

    def open(self, name: str) -> DataArray:
        """The array as last committed; UnknownArray if there is none of that name."""
        check_array_name(name)
        try:
            array = zarr.open_array(self.store, path=f"{name}/{DATA}", mode="r")
        except FileNotFoundError:
            raise UnknownArray(f"no array named {name!r}") from None
        return DataArray(self, name, array)

    def names(self) -> list[str]:
        async def listed() -> list[str]:
            return [entry async for entry in self.store.list_dir("")]

        return sorted(
            name
            for name in sync(listed())
            if not name.startswith(".") and name != METADATA and self._exists(name)
        )

    def remove(self, name: str) -> None:
        check_array_name(name)
        with self._lock(name):
            if not self._exists(name):
                raise UnknownArray(f"no array named {name!r}")
            # The commit point first: the array is gone at once for readers.
            sync(self.store.delete(f"{name}/{DATA}/{METADATA}"))
            sync(self.store.delete_dir(name))


def check_new_array(
    name: str, dtype: np.typing.DTypeLike, inner_shape: tuple[int, ...], attributes: dict | None
) -> tuple[np.dtype, tuple[int, ...], dict]:
    """What ``create`` checks, for a caller that must know before it changes anything."""
    check_array_name(name)
    try:
        dtype = np.dtype(dtype)
    except TypeError as bad:
        raise ArrayError(f"{dtype!r} is not a dtype: {bad}") from None
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
        raise ArrayError(
            f"dtype {dtype.str} cannot be stored: use a bool, integer, float or complex dtype"
        )
    if dtype.byteorder == ">":  # stored little-endian, as every machine here reads it
        dtype = dtype.newbyteorder("<")
    inner_shape = tuple(int(size) for size in inner_shape)
    if any(size < 1 for size in inner_shape):
        raise ArrayError(f"inner shape {inner_shape} has an empty dimension")
    return dtype, inner_shape, _user_attributes(attributes or {})


def _user_attributes(attributes: dict) -> dict:
    if not isinstance(attributes, dict):
        raise ArrayError("attributes must be a JSON object")
    if KILN in attributes:
        raise ArrayError(f"the attribute {KILN!r} is reserved")
    return dict(attributes)


class DataArray:
    """One array as of its last commit (``refresh`` or a new ``open`` sees later ones)."""

    def __init__(self, store: ArrayStore, name: str, array: zarr.Array) -> None:
        self._store = store
        self.name = name
        self._array = array

    # What the committed metadata says.
    @property
    def _kiln(self) -> dict:
        return self._array.attrs.get(KILN) or {}

    @property
    def policy(self) -> str | None:
        return self._kiln.get("policy")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._array.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self._array.chunks)

    @property
    def attributes(self) -> dict:
        return {key: value for key, value in self._array.attrs.asdict().items() if key != KILN}

    @property
    def provenance(self) -> Provenance | None:
        source = self._kiln.get("source")
        if source is None:
            return None
        return Provenance(source[0], source[1], self.consumed)

    @property
    def consumed(self) -> int:
        return int(self._kiln.get("consumed") or 0)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<DataArray {self.name} {self.dtype.str} {self.shape}>"

    def refresh(self) -> DataArray:
        """Read the latest committed metadata."""
        self._array = self._store.open(self.name)._array
        return self

    # Reading.
    def __getitem__(self, selection: Any) -> np.ndarray:
        rows = self._row_range(selection)
        if rows is not None:
            return self._read_rows(*rows)
        try:
            return self._array[selection]
        except (IndexError, TypeError, ValueError) as bad:
            raise ArrayError(f"cannot select {selection!r} in shape {self.shape}: {bad}") from None

    def _row_range(self, selection: Any) -> tuple[int, int] | None:
        """(start, stop) if ``selection`` is whole rows [start:stop] of a local, uncompressed
        array (the common read, served by ``_read_rows``); None for anything else."""
        parts = selection if isinstance(selection, tuple) else (selection,)
        store = self._store.store
        if (
            not isinstance(store, DurableLocalStore)
            or not parts
            or not isinstance(parts[0], slice)
            or any(part != slice(None) for part in parts[1:])
            or len(parts) > len(self.shape)
            or parts[0].step not in (None, 1)
            or self.dtype.byteorder == ">"
            or self.chunks[1:] != self.shape[1:]
            or [codec.to_dict()["name"] for codec in self._array.metadata.codecs] != ["bytes"]
        ):
            return None
        start, stop, _ = parts[0].indices(self.shape[0])
        return start, max(start, stop)

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) read from the chunk files straight into the result: one copy,
        as a memory map would make (Zarr's reader copies each chunk twice). Uncompressed
        chunks with the ``bytes`` codec are the rows in C order, so a row range of a chunk is
        one byte range of its file. A missing chunk was never written: the fill value."""
        result = np.empty((stop - start, *self.shape[1:]), self.dtype)
        if start == stop:
            return result
        flat = result.reshape(stop - start, -1).view(np.uint8)
        row_bytes = flat.shape[1]
        rows_per_chunk = self.chunks[0]
        directory = self._store.store.root / self.name / DATA / "c"
        inner = "/0" * (len(self.shape) - 1)
        row = start
        while row < stop:
            number, offset = divmod(row, rows_per_chunk)
            count = min(stop - row, rows_per_chunk - offset)
            target = memoryview(flat[row - start : row - start + count]).cast("B")
            try:
                with open(f"{directory}/{number}{inner}", "rb", buffering=0) as chunk:
                    chunk.seek(offset * row_bytes)
                    done = 0
                    while done < len(target):
                        got = chunk.readinto(target[done:])
                        if not got:
                            raise ArrayError(f"chunk {number} of array {self.name!r} is short")
                        done += got
            except FileNotFoundError:
                result[row - start : row - start + count] = self._array.metadata.fill_value
            row += count
        return result

    def to_dask(self) -> Any:
        import dask.array

        return dask.array.from_zarr(self._array)

    # Writing.
    def append(self, rows: np.ndarray, *, consumed: int | None = None) -> None:
        """Append along axis 0. Atomic for readers: chunk objects are written first (beyond the
        committed shape, so invisible), then one metadata write commits the new shape and
        `consumed` together. A killed writer leaves the last complete state. Zero rows with a
        new `consumed` is allowed (input consumed that produced no row)."""
        rows = np.asarray(rows)
        with self._store._lock(self.name):
            self.refresh()  # another DataArray of this name may have appended since
            self._check_rows(rows)
            kiln = dict(self._kiln)
            if consumed is not None:
                if consumed < kiln.get("consumed", 0):
                    raise ArrayError(
                        f"consumed {consumed} is before the committed {kiln.get('consumed')}: "
                        "an array's cursor only moves forward"
                    )
                kiln["consumed"] = int(consumed)
            staging = _StagedMetadata(self._store.store)
            array = zarr.open_array(staging, path=f"{self.name}/{DATA}", mode="r+")
            start = array.shape[0]
            stop = start + len(rows)
            if len(rows):
                sync(array.async_array.resize((stop, *rows.shape[1:]), False))
                array[start:stop] = rows.astype(self.dtype, copy=False)
                if kiln.get("tail") is not None:
                    kiln["tail"] = self._extend_pyramid(rows, start, kiln["tail"])
            array.update_attributes({KILN: kiln})
            sync(staging.commit())
            self.refresh()

    def _check_rows(self, rows: np.ndarray) -> None:
        inner = self.shape[1:]
        if rows.dtype.kind not in NUMERIC_KINDS or rows.dtype.fields is not None:
            raise ArrayError(f"rows of dtype {rows.dtype.str} cannot go into array {self.name!r}")
        if not np.can_cast(rows.dtype, self.dtype, casting="safe"):
            raise ArrayError(
                f"rows of dtype {rows.dtype.str} do not fit array {self.name!r} of dtype "
                f"{self.dtype.str} without loss"
            )
        if rows.ndim != 1 + len(inner) or rows.shape[1:] != inner:
            raise ArrayError(
                f"rows shaped {rows.shape} cannot be appended to array {self.name!r} of shape "
                f"{self.shape}: each row must be shaped {inner}"
            )

    def _extend_pyramid(self, rows: np.ndarray, start: int, tail: list) -> list:
        """Write the pyramid blocks the rows complete; the new tail (partial blocks).

        Level k is computed from level k-1's new entries, grouped by FACTOR; the first group
        is merged with the old tail of level k (the block's rows already committed). Min and
        max are idempotent, so counting an old row twice is harmless.
        """
        values = rows.astype(self.dtype, copy=False)
        lows, highs = values, values  # level 0: min == max == the row
        first = start  # index of the first entry of lows/highs at the level below
        stop = start + len(rows)
        new_tail: list = []
        for level in range(1, LEVELS + 1):
            block = FACTOR**level
            first_entry = start // block
            # Where each group of FACTOR entries of the level below starts, in lows/highs.
            offsets = np.arange(first_entry * FACTOR, -(-stop // (block // FACTOR)), FACTOR)
            offsets = np.maximum(offsets - first, 0)
            lows = np.fmin.reduceat(lows, offsets, axis=0)
            highs = np.fmax.reduceat(highs, offsets, axis=0)
            old = tail[level - 1]
            if old is not None and start % block:
                lows[0] = np.fmin(lows[0], _decode(old[0], self.dtype))
                highs[0] = np.fmax(highs[0], _decode(old[1], self.dtype))
            complete = stop // block - first_entry
            if complete > 0:
                level_array = zarr.open_array(
                    self._store.store, path=f"{self.name}/{PYRAMID}/{level}", mode="r+"
                )
                pairs = np.stack([lows[:complete], highs[:complete]], axis=1)
                level_array[first_entry : first_entry + complete] = pairs
            last = np.stack([lows[-1], highs[-1]])
            new_tail.append(_encode(last) if stop % block else None)
            first = first_entry
        return new_tail

    def set_attributes(self, **attributes: object) -> None:
        """Add or replace user attributes (one atomic metadata write)."""
        _user_attributes(attributes)
        with self._store._lock(self.name):
            self.refresh()
            array = zarr.open_array(self._store.store, path=f"{self.name}/{DATA}", mode="r+")
            array.update_attributes(attributes)
            self.refresh()

    def window(self, start: int, stop: int, buckets: int, column: int = 0) -> Window:
        """Min/max per bucket over rows [start, stop) of one column, from the coarsest pyramid
        level that still gives at least ``buckets`` points (groups of its entries make at most
        ``buckets`` buckets). ``start`` is rounded down, ``stop`` up to the level's blocks.
        """
        length = self.shape[0]
        if self.dtype.kind not in PYRAMID_KINDS or len(self.shape) > 2:
            raise ArrayError(
                f"array {self.name!r} ({self.dtype.str}, shape {self.shape}) has no min/max "
                "windows: only integer or float arrays of 1 or 2 dimensions do"
            )
        if buckets < 1:
            raise ArrayError(f"buckets must be at least 1, not {buckets}")
        if not 0 <= start <= stop <= length:
            raise ArrayError(
                f"window [{start}, {stop}) is outside array {self.name!r} of shape {self.shape}"
            )
        columns = self.shape[1] if len(self.shape) == 2 else 1
        if not 0 <= column < columns:
            raise ArrayError(
                f"column {column} is outside array {self.name!r} of shape {self.shape}"
            )
        if start == stop:
            empty = np.empty(0, self.dtype)
            return Window(start, stop, 1, 0, empty, empty)
        level = 0
        if self._kiln.get("tail") is not None:
            while level < LEVELS and FACTOR ** (level + 1) * buckets <= stop - start:
                level += 1
        elif stop - start > WINDOW_RAW_ROWS:
            raise ArrayError(
                f"array {self.name!r} has no min/max pyramid (its rows are too wide): a window "
                f"spans at most {WINDOW_RAW_ROWS} rows, not {stop - start}"
            )
        block = FACTOR**level
        first, end = start // block, -(-stop // block)
        entries = self._level_entries(level, first, end, column)
        group = -(-(end - first) // buckets)
        offsets = np.arange(0, end - first, group)
        return Window(
            first * block,
            min(end * block, length),
            group * block,
            level,
            np.fmin.reduceat(entries[:, 0], offsets),
            np.fmax.reduceat(entries[:, 1], offsets),
        )

    def _level_entries(self, level: int, first: int, end: int, column: int) -> np.ndarray:
        """(min, max) of entries [first, end) of one pyramid level, one column."""
        if level == 0:
            values = (
                self._array[first:end] if self._array.ndim == 1 else self._array[first:end, column]
            )
            return np.stack([values, values], axis=1)
        complete = self.shape[0] // FACTOR**level
        parts = []
        if first < complete:
            stored = zarr.open_array(
                self._store.store, path=f"{self.name}/{PYRAMID}/{level}", mode="r"
            )
            upto = min(end, complete)
            parts.append(stored[first:upto] if stored.ndim == 2 else stored[first:upto, :, column])
        if end > complete:  # the partial block: its min/max is committed in the tail
            tail = self._kiln["tail"][level - 1]
            pair = np.array([_decode(tail[0], self.dtype), _decode(tail[1], self.dtype)])
            parts.append((pair if pair.ndim == 1 else pair[:, column])[np.newaxis])
        return np.concatenate(parts).astype(self.dtype, copy=False)


def _decode(value: Any, dtype: np.dtype) -> np.ndarray:
    if isinstance(value, list):
        return np.array([_from_json_number(item) for item in value], dtype=dtype)
    return np.array(_from_json_number(value), dtype=dtype)
