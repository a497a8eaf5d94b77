"""A small thread pool with a bounded queue, for slow work that a client can trigger at will.

asyncio's default executor has an unbounded queue: a flood of requests that each cost a
password hash (or a big JSON conversion) queues behind it every blob read and write of the
server.  Such work runs here instead, in its own few threads; past ``workers + queue`` jobs
in flight, :meth:`BoundedExecutor.run` raises :class:`Busy` at once, which a server answers
with ``503`` and ``Retry-After`` rather than letting the queue (and its memory) grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Busy(RuntimeError):
    """The pool and its queue are full; try again later (``retry_after`` seconds)."""

    def __init__(self, name: str, limit: int, retry_after: int) -> None:
        super().__init__(f"the {name} pool is busy ({limit} jobs in flight); retry later")
        self.retry_after = retry_after


class BoundedExecutor:
    """``workers`` threads and at most ``queue`` jobs waiting for one.

    A job counts until its thread is done with it, even when the awaiting request was
    cancelled (the thread cannot be stopped): the bound is on real work, not on waiters.
    """

    def __init__(self, name: str, workers: int, queue: int, retry_after: int = 1) -> None:
        if workers < 1 or queue < 0:
            raise ValueError(f"{name} pool: workers must be >= 1 and queue >= 0")
        self.name = name
        self.limit = workers + queue
        self.retry_after = retry_after
        self.in_flight = 0
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """Run ``function(*args)`` in a thread of this pool; raises Busy when it is full."""
        if self.in_flight >= self.limit:
            raise Busy(self.name, self.limit, self.retry_after)
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        future = self._executor.submit(functools.partial(function, *args))
        # Counted down on the event loop's thread, where it is counted up: no lock needed.
        future.add_done_callback(lambda _: self._count_down(loop))
        return await asyncio.wrap_future(future)

    def _count_down(self, loop: asyncio.AbstractEventLoop) -> None:
        # Called in the worker thread: the count is changed on the loop's thread only.
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to count
            loop.call_soon_threadsafe(self._done)

    def _done(self) -> None:
        self.in_flight -= 1

    def shutdown(self, wait: bool = False) -> None:
        """Stop the threads; ``wait``: finish the jobs in flight first (a clean stop)."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)


class ThrottledLog:
    """A warning that a flood would repeat for every request: logged at most once every
    ``every`` seconds, with how many times it happened since the last line."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self._logger = logger
        self._every = every
        self._last = -every
        self._unlogged = 0

    def warning(self, message: str, *args: object) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last >= self._every:
            self._logger.warning(
                message + " (%d time(s) in the last %.0f s)", *args, self._unlogged, self._every
            )
            self._last, self._unlogged = now, 0
