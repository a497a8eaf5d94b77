import asyncio
import threading

import pytest

from kiln.common.limits import BoundedExecutor, Busy

pytestmark = pytest.mark.unit


def test_a_full_pool_refuses_at_once_and_frees_its_places_when_jobs_end() -> None:
    release = threading.Event()

    async def scenario() -> None:
        pool = BoundedExecutor("test", workers=1, queue=1, retry_after=3)
        running = [asyncio.ensure_future(pool.run(release.wait, 10)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Busy, match="test pool is busy") as refused:
            await pool.run(lambda: None)
        assert refused.value.retry_after == 3
        # A cancelled waiter of a running job does not free its place: its thread still runs.
        running[0].cancel()
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):
            await pool.run(lambda: None)
        # A queued job that is cancelled never runs, and frees its place.
        running[1].cancel()
        await asyncio.sleep(0.05)
        assert pool.in_flight == 1
        release.set()
        for _ in range(100):
            if pool.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert await pool.run(lambda x: x * 2, 21) == 42
        pool.shutdown()

    asyncio.run(scenario())


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        BoundedExecutor("x", workers=0, queue=1)
