"""The per-shared-part lock: another process holding it makes us wait, and its death frees it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kiln.buildout.shared_parts import SharedLocation, shared_part_lock

pytestmark = pytest.mark.unit

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_a_lock_held_by_a_killed_build_is_released(tmp_path: Path) -> None:
    location = SharedLocation(tmp_path / "shared", "liba/0123abcd")
    with shared_part_lock(location):
        pass  # creates the lock file, beside the parts
    assert location.lock_file == tmp_path / "shared" / ".kiln-locks" / "liba" / "0123abcd.lock"
    assert not location.path.exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(location.lock_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        waited: list[float] = []
        threading.Timer(0.5, holder.kill).start()  # the other build dies mid-install
        started = time.monotonic()
        with shared_part_lock(location, lambda: waited.append(time.monotonic())):
            acquired = time.monotonic() - started
        assert len(waited) == 1
        assert 0.4 < acquired < 10
    finally:
        holder.kill()
        holder.wait()
