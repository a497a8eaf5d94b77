"""A worker-thread pool with a bounded queue, for CPU work that must stay off an event loop.

``concurrent.futures.ThreadPoolExecutor`` queues without limit: a flood of requests that each
need CPU (scrypt, decompression, a large conversion) would pile up in its queue, holding their
memory and making every later caller wait behind them. Here a caller past ``workers + queue``
jobs gets :class:`PoolFull` at once, which a server answers as "overloaded, retry later".
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class PoolFull(RuntimeError):
    """Every worker is busy and the queue is full: retry later."""


class BoundedPool:
    """``workers`` threads and at most ``queue`` jobs waiting for one; used from one loop."""

    def __init__(self, name: str, workers: int, queue: int) -> None:
        if workers < 1 or queue < 0:
            raise ValueError(f"{name}: need at least one worker and a queue of 0 or more")
        self.name = name
        self.capacity = workers + queue
        self.busy = 0  # running or waiting, counted on the event loop
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=name)

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` in a worker; PoolFull if the pool is saturated."""
        if self.busy >= self.capacity:
            raise PoolFull(f"{self.name}: {self.capacity} jobs running or queued already")
        loop = asyncio.get_running_loop()
        job = self._executor.submit(functools.partial(function, *args, **kwargs))
        self.busy += 1
        # Counted until the thread is done, not until the caller stops waiting: a cancelled
        # caller's job still occupies its worker.
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finished))
        return await asyncio.wrap_future(job, loop=loop)

    def _finished(self) -> None:
        self.busy -= 1

    def shutdown(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
