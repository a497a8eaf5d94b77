"""The background loop of `kiln wendelin serve` that runs the declared transformations.

Every ``poll_seconds`` (and at once after a step that advanced), each transformation whose
stream grew, or that never ran, gets one step in the ``transform`` worker thread: the event
loop only schedules. A step reads at most ``batch_bytes`` of its stream, so memory stays
bounded however long the stream is; Dask runs the heavy part (threads here, or the workers
of a ``dask.distributed`` scheduler). Steps run one at a time, one transformation after the
other, each to the end of what its stream holds.

A step that raises marks its transformation failed, with the message; its arrays keep
their last committed rows (each append is atomic). A failed transformation is retried after
a backoff (``retry_seconds``, doubling up to an hour), at once when its declaration changes
(a fix) or when `kiln wendelin transform retry` asks, and at every restart.

The status of each transformation is kept in memory for ``/api/transforms`` and the index
page, and written to ``<root>/transforms/status.json`` for `kiln wendelin status`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from kiln.common.durable import write_atomically
from kiln.common.limits import BoundedExecutor
from kiln.wendelin.arrays.basics import LazyArrayStore, UnknownArray
from kiln.wendelin.stream_reader import StoreReader
from kiln.wendelin.transform import declarations
from kiln.wendelin.transform.compute import Compute
from kiln.wendelin.transform.model import (
    CAUGHT_UP,
    FAILED,
    RUNNING,
    WAITING,
    Declaration,
    status_path,
)

if TYPE_CHECKING:
    from kiln.wendelin.arrays.store import ArrayStore
    from kiln.wendelin.transform.kinds import Transformation

log = logging.getLogger(__name__)
MAX_RETRY_SECONDS = 3600.0


def transformation(declaration: Declaration) -> Transformation:
    """The declaration's transformation; its kinds (numpy, Dask) are imported at the first
    declaration, so a service with none starts without them (arrays/basics.py)."""
    from kiln.wendelin.transform.kinds import transformation as make

    return make(declaration)


@dataclass(frozen=True, slots=True)
class TransformSettings:
    scheduler_address: str | None = None  # a dask.distributed scheduler; None: threads here
    batch_bytes: int = 16 << 20  # stream bytes read per step
    poll_seconds: float = 1.0
    retry_seconds: float = 30.0  # first automatic retry of a failed transformation


@dataclass(slots=True)
class Status:
    """What `kiln wendelin status`, ``/api/transforms`` and the index page show."""

    output: str
    stream: str
    kind: str
    origin: str
    params: dict
    policy: str | None = None
    state: str = WAITING
    message: str = ""
    stream_size: int = 0
    outputs: dict[str, dict[str, int]] = field(default_factory=dict)  # rows, consumed
    steps: int = 0
    failures: int = 0
    updated: float = 0.0
    retry_at: float | None = None

    @property
    def consumed(self) -> int:
        """The lowest cursor among the outputs: how far the whole transformation got."""
        return min((output["consumed"] for output in self.outputs.values()), default=0)


class _Job:
    def __init__(self, declaration: Declaration, retry: int) -> None:
        self.declaration = declaration
        self.retry = retry
        self.status = Status(
            declaration.output,
            declaration.stream,
            declaration.kind,
            declaration.origin,
            declaration.params,
        )
        self.seen_size = -1  # stream size at the last step that did not advance
        self.backoff = 0.0
        self.transformation: Transformation | None = None
        try:
            self.output_names = transformation(declaration).outputs()
        except ValueError:  # bad params: the first step says so, as the job's failure
            self.output_names = [declaration.output]

    def due(self, size: int, now: float) -> bool:
        if self.status.state == FAILED:
            return self.status.retry_at is not None and now >= self.status.retry_at
        return size != self.seen_size


class Runner:
    """Runs the declarations of ``root`` over ``streams`` into ``arrays``, in the background."""

    def __init__(
        self,
        root: str,
        streams: StoreReader,
        arrays: ArrayStore | LazyArrayStore,
        settings: TransformSettings | None = None,
    ) -> None:
        self.root = root
        self.streams = streams
        self.arrays = arrays
        self.settings = settings or TransformSettings()
        self.compute = Compute(self.settings.scheduler_address)
        self._pool = BoundedExecutor("transform", 1, 1)
        self._jobs: dict[str, _Job] = {}
        self._declared_version: object = object()
        self._declared = declarations.Declared()
        self._status_path = status_path(root)
        self._written_status = ""

    # -- what to run ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reread the declarations when the CLI changed them; match jobs to them."""
        version = declarations.version(self.root)
        if version != self._declared_version:
            try:
                self._declared = declarations.load(self.root)
            except (OSError, ValueError, TypeError) as problem:
                log.error("cannot read the declared transformations: %s", problem)
                return
            self._declared_version = version
        wanted: dict[str, Declaration] = {}
        conflicts: dict[str, str] = {}
        for declaration in self._declared.declarations(list(self.streams)):
            if declaration.output in wanted:
                conflicts[declaration.output] = declaration.origin
                continue
            wanted[declaration.output] = declaration
        for output in list(self._jobs):
            if output not in wanted:
                del self._jobs[output]
        for output, declaration in wanted.items():
            retry = self._declared.retries.get(output, 0)
            job = self._jobs.get(output)
            if job is None or not job.declaration.same_work(declaration) or job.retry != retry:
                job = self._jobs[output] = _Job(declaration, retry)  # new, fixed or retried
            if output in conflicts:
                self._fail(
                    job,
                    f"output {output} is declared twice ({declaration.origin} and "
                    f"{conflicts[output]}): remove one",
                    retry=False,
                )

    # -- running ----------------------------------------------------------------------------

    async def run_forever(self) -> None:
        while True:
            try:
                advanced = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("transformations: unexpected failure; going on")
                advanced = False
            self._write_status()
            if not advanced:
                await asyncio.sleep(self.settings.poll_seconds)

    async def run_once(self) -> bool:
        """One step of every transformation that has work; whether any advanced."""
        self.refresh()
        advanced = False
        for job in list(self._jobs.values()):
            stream = self.streams.get(job.declaration.stream)
            if stream is None:
                job.status.state = WAITING
                job.status.message = f"no stream {job.declaration.stream} yet"
                continue
            size = stream.stats.size
            if not job.due(size, time.time()):
                continue
            job.status.state = RUNNING
            try:
                step = await self._pool.run(self._step, job, stream)
            except Exception as problem:  # any failure of a step is the job's, shown as such
                self._fail(job, _message(problem), retry=True)
                log.warning("transformation %s failed: %s", job.declaration.output, problem)
                continue
            job.status.steps += 1
            job.status.failures = 0
            job.backoff = 0.0
            job.status.retry_at = None
            job.status.stream_size = size
            job.status.state = RUNNING if step.advanced else CAUGHT_UP
            job.status.message = "" if step.advanced else f"waiting for {step.waiting}"
            job.status.updated = time.time()
            if step.advanced:
                advanced = True
            else:
                job.seen_size = size
        return advanced

    def _step(self, job: _Job, stream) -> object:
        """In the worker thread: one step, then the outputs' cursors for the status."""
        if job.transformation is None:
            job.transformation = transformation(job.declaration)
        job.status.policy = stream.policy
        step = job.transformation.step(stream, self.arrays, self.compute, self.settings.batch_bytes)
        self._read_outputs(job)
        return step

    def _read_outputs(self, job: _Job) -> None:
        outputs = {}
        for name in job.output_names:
            try:
                array = self.arrays.open(name)
            except UnknownArray:
                continue
            outputs[name] = {"rows": int(array.shape[0]), "consumed": int(array.consumed)}
        job.status.outputs = outputs

    def _fail(self, job: _Job, message: str, retry: bool) -> None:
        status = job.status
        status.state = FAILED
        status.message = message
        status.failures += 1
        status.updated = time.time()
        job.transformation = None  # rebuilt on retry: the header is read again, and so on
        if retry:
            job.backoff = min(max(2 * job.backoff, self.settings.retry_seconds), MAX_RETRY_SECONDS)
            status.retry_at = status.updated + job.backoff
        else:
            status.retry_at = None
        try:
            self._read_outputs(job)
        except Exception:  # the status is shown without the cursors rather than not at all
            log.exception("cannot read the outputs of %s", job.declaration.output)

    async def catch_up(self, timeout: float | None = None) -> None:
        """Run until no transformation advances (for a one-shot run and for tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while await self.run_once():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("transformations still running")
        self._write_status()

    # -- status -------------------------------------------------------------------------------

    def statuses(self) -> list[Status]:
        return [job.status for _, job in sorted(self._jobs.items())]

    def _write_status(self) -> None:
        document = json.dumps(
            {
                "compute": self.compute.description,
                "transforms": [asdict(status) for status in self.statuses()],
            },
            indent=1,
        )
        if document == self._written_status:
            return
        try:
            write_atomically(self._status_path, document.encode())
            self._written_status = document
        except OSError as problem:
            log.warning("cannot write %s: %s", self._status_path, problem)

    async def close(self) -> None:
        """Let a step in progress finish (its append is atomic anyway), then stop."""
        await asyncio.to_thread(self._pool.shutdown, True)
        self.compute.close()
        self._write_status()


def _message(problem: BaseException) -> str:
    text = str(problem) or type(problem).__name__
    if isinstance(problem, KeyError) and problem.args:
        text = str(problem.args[0])
    return text if len(text) <= 2000 else text[:2000] + "…"
