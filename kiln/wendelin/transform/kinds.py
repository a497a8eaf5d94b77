"""The kinds of transformation: what each reads, which arrays it writes, and one step of it.

A step reads the next range of its stream (at most ``batch_bytes``), computes rows, and
appends them to each output array with that output's new cursor: ``DataArray.append(rows,
consumed=offset)`` commits the rows and the stream offset they account for in one metadata
write. The cursor is the only state: a step starts from the arrays' committed ``consumed``,
so a restart, a crash, or a kill between two steps resumes exactly where the data stopped.

Each output has its own cursor (rather than outputs derived from the first output's rows):
a transformation with two outputs appends to them one after the other, and a crash between
the two appends leaves one ahead of the other. The next step reads from the lower cursor
and gives each output only what lies past its own, so neither skips nor repeats; and an
output added later (or removed and rebuilt) catches up from the start without touching the
others.
"""

from abc import ABC, abstractmethod

import numpy as np

from kiln.wendelin.arrays.store import ArrayStore, DataArray, Provenance, UnknownArray
from kiln.wendelin.stream_reader import ENTRIES, RAW, StreamReader
from kiln.wendelin.transform import records, spectrum, wav
from kiln.wendelin.transform.compute import Compute
from kiln.wendelin.transform.model import SUFFIXES, Declaration, Step, TransformError


class Transformation(ABC):
    stream_kind: str

    def __init__(self, declaration: Declaration) -> None:
        self.declaration = declaration

    @abstractmethod
    def outputs(self) -> list[str]:
        """The arrays it writes."""

    @abstractmethod
    def step(
        self, stream: StreamReader, arrays: ArrayStore, compute: Compute, batch_bytes: int
    ) -> Step:
        """Process the next range of ``stream`` (see the module's docstring)."""

    def check_stream(self, stream: StreamReader) -> None:
        if stream.kind != self.stream_kind:
            what = "raw bytes" if stream.kind == RAW else "entries"
            raise TransformError(
                f"stream {stream.name} holds {what}: {self.declaration.kind} reads "
                f"{'raw byte streams (an uploaded file)' if self.stream_kind == RAW else 'entries'}"
            )

    def output_array(
        self,
        arrays: ArrayStore,
        stream: StreamReader,
        name: str,
        dtype: np.dtype,
        inner_shape: tuple[int, ...],
        attributes: dict,
    ) -> DataArray:
        """The output array, created on first use; an existing one must be ours, in shape."""
        try:
            array = arrays.open(name)
        except UnknownArray:
            described = {
                **attributes,
                "transformation": {"kind": self.declaration.kind, **self.declaration.params},
            }
            return arrays.create(
                name,
                dtype,
                inner_shape=inner_shape,
                attributes=described,
                policy=stream.policy,
                source=Provenance(stream.name, 0, 0),
                exist_ok=True,
            )
        if array.dtype != dtype or tuple(array.shape[1:]) != inner_shape:
            raise TransformError(
                f"array {name} exists with dtype {array.dtype} and rows of shape "
                f"{tuple(array.shape[1:])}, but this transformation writes {np.dtype(dtype)} "
                f"rows of shape {inner_shape}: remove the array or choose another output name"
            )
        if array.provenance is not None and array.provenance.stream != stream.name:
            raise TransformError(
                f"array {name} holds data from stream {array.provenance.stream}, "
                f"not {stream.name}: choose another output name"
            )
        return array


def _int_param(params: dict, name: str, default: int, minimum: int) -> int:
    value = params.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise TransformError(f"parameter {name} must be an integer, not {value!r}") from None
    if number < minimum:
        raise TransformError(f"parameter {name} must be at least {minimum}, not {number}")
    return number


class WavTransformation(Transformation):
    """WAV bytes of a raw stream into PCM arrays: all channels, one channel, its spectrum."""

    stream_kind = RAW
    roles: tuple[str, ...] = ()

    def __init__(self, declaration: Declaration) -> None:
        super().__init__(declaration)
        params = declaration.params
        self.channel = _int_param(params, "channel", 0, 0)
        self.window = _int_param(params, "window", 1024, 2)
        self.hop = _int_param(params, "hop", self.window // 2, 1)
        self.taper = str(params.get("taper", "hann"))
        try:
            spectrum.taper(self.taper, 2)
        except ValueError as problem:
            raise TransformError(str(problem)) from None
        self._format: wav.WavFormat | None = None  # a stream's header never changes

    def names(self) -> dict[str, str]:
        """Array name of each role this kind writes."""
        return {role: self.declaration.output for role in self.roles}

    def outputs(self) -> list[str]:
        return list(self.names().values())

    def header(self, stream: StreamReader) -> wav.WavFormat | None:
        if self._format is None:
            want = 4096
            while True:
                head = stream.read(0, want)
                found = wav.parse_header(head)
                if found is not None or len(head) < want:
                    break  # found, or the stream has no more bytes yet
                want = min(2 * want, wav.MAX_HEADER_BYTES + 8)
            self._format = found
        return self._format

    def step(
        self, stream: StreamReader, arrays: ArrayStore, compute: Compute, batch_bytes: int
    ) -> Step:
        self.check_stream(stream)
        size = stream.stats.size  # one snapshot: the stream may grow while we work
        try:
            form = self.header(stream)
        except wav.NotWav as problem:
            raise TransformError(f"stream {stream.name}: {problem}") from None
        if form is None:
            return Step(waiting="the WAV header")
        if self.channel >= form.channels:
            raise TransformError(
                f"channel {self.channel} is out of range: stream {stream.name} has "
                f"{form.channels} channel(s), numbered from 0"
            )
        outputs = {
            role: self._open(role, name, arrays, stream, form)
            for role, name in self.names().items()
        }
        frame = form.frame_bytes
        available = max(0, form.data_end(size) - form.data_start) // frame
        firsts = {role: self._first_frame(role, array, form) for role, array in outputs.items()}
        start = min(firsts.values())
        stop = min(available, start + max(batch_bytes // frame, 2 * self.window))
        if stop <= start:
            return Step(waiting="more samples")
        data = stream.read(form.data_start + start * frame, (stop - start) * frame)
        frames = wav.decode(data, form)
        advanced = False
        for role, array in outputs.items():
            mine = frames[firsts[role] - start :]
            if role == "spectrum":
                rows = spectrum.spectrum(
                    mine[:, self.channel], self.window, self.hop, self.taper, compute
                )
                next_frame = firsts[role] + len(rows) * self.hop
            else:
                rows = mine if role == "pcm" else mine[:, self.channel]
                next_frame = stop
            if next_frame > firsts[role]:
                array.append(rows, consumed=form.data_start + next_frame * frame)
                advanced = True
        return Step(advanced=advanced, waiting="" if advanced else "more samples")

    def _open(
        self, role: str, name: str, arrays: ArrayStore, stream: StreamReader, form: wav.WavFormat
    ) -> DataArray:
        attributes = form.attributes()
        if role == "pcm":
            return self.output_array(arrays, stream, name, form.dtype, (form.channels,), attributes)
        if role == "channel":
            attributes["channel"] = self.channel
            return self.output_array(arrays, stream, name, form.dtype, (), attributes)
        attributes.update(
            channel=self.channel,
            window=self.window,
            hop=self.hop,
            taper=self.taper,
            bin_hz=form.sample_rate / self.window,
            rows="row k: |rfft| of frames [k * hop, k * hop + window) times the taper",
        )
        bins = (self.window // 2 + 1,)
        return self.output_array(arrays, stream, name, np.dtype(np.float64), bins, attributes)

    def _first_frame(self, role: str, array: DataArray, form: wav.WavFormat) -> int:
        """The first frame ``array`` still needs, from its committed cursor."""
        frames = max(0, array.consumed - form.data_start) // form.frame_bytes
        rows = frames // self.hop if role == "spectrum" else frames
        if array.shape[0] != rows:
            raise TransformError(
                f"array {array.name} has {array.shape[0]} rows but its cursor "
                f"({array.consumed}) accounts for {rows}: it was not written by this "
                "transformation; remove it or choose another output name"
            )
        return rows * self.hop if role == "spectrum" else frames


class WavPcm(WavTransformation):
    """Every channel: rows are frames, columns channels, in the samples' own dtype."""

    roles = ("pcm",)


class WavChannel(WavTransformation):
    """One channel (``channel``, from 0) as a 1-D array of samples."""

    roles = ("channel",)


class WavSpectrum(WavTransformation):
    """One channel's samples (``<output>.channel``) and their spectrum (``<output>``):
    ``|rfft|`` of windows of ``window`` frames every ``hop`` frames, times the taper."""

    roles = ("spectrum", "channel")

    def names(self) -> dict[str, str]:
        output = self.declaration.output
        return {"spectrum": output, "channel": f"{output}.channel"}


class RecordColumns(Transformation):
    """Numeric fields of entries into a 2-D float64 array: time, then one column per field.

    The columns are fixed when the array is created: the ``fields`` parameter (comma
    separated), or else every numeric top-level field of the first batch of entries. A field
    that appears only later is not added (declare ``fields`` to have it).
    """

    stream_kind = ENTRIES

    def outputs(self) -> list[str]:
        return [self.declaration.output]

    def step(
        self, stream: StreamReader, arrays: ArrayStore, compute: Compute, batch_bytes: int
    ) -> Step:
        self.check_stream(stream)
        size = stream.stats.size
        name = self.declaration.output
        try:
            array: DataArray | None = arrays.open(name)
        except UnknownArray:
            array = None
        consumed = array.consumed if array is not None else 0
        if consumed >= size:
            return Step(waiting="more entries")
        length = batch_bytes
        while True:  # an entry larger than a batch: read more until it is whole
            data = stream.read(consumed, length)
            entries, used = records.parse(data)
            if entries or consumed + len(data) >= size:
                break
            length *= 2
        if not entries:
            return Step(waiting="more entries")
        if array is None:
            fields = self._fields(entries, stream)
            array = self.output_array(
                arrays, stream, name, np.dtype(np.float64), (len(fields) + 1,),
                {"columns": ["time", *fields]},
            )  # fmt: skip
        fields = list(array.attributes.get("columns", ["time"]))[1:]
        try:
            table = records.rows(entries, fields, array.shape[0])
        except records.RecordError as problem:
            raise TransformError(f"stream {stream.name}, {problem}") from None
        array.append(table, consumed=consumed + used)
        return Step(advanced=True)

    def _fields(self, entries: list[list], stream: StreamReader) -> list[str]:
        declared = self.declaration.params.get("fields")
        if declared:
            return [name.strip() for name in str(declared).split(",") if name.strip()]
        found = records.numeric_fields(entries)
        if not found:
            raise TransformError(
                f"stream {stream.name}: no numeric field in its first {len(entries)} "
                "entries; name the fields with --fields"
            )
        return found


KINDS: dict[str, type[Transformation]] = {
    "wav-pcm": WavPcm,
    "wav-channel": WavChannel,
    "wav-spectrum": WavSpectrum,
    "records": RecordColumns,
}
assert set(KINDS) == set(SUFFIXES)


def transformation(declaration: Declaration) -> Transformation:
    """The transformation a declaration asks for; TransformError for a bad kind or params."""
    kind = KINDS.get(declaration.kind)
    if kind is None:
        raise TransformError(
            f"unknown transformation kind {declaration.kind!r}: use one of {', '.join(KINDS)}"
        )
    return kind(declaration)
