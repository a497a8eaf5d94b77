"""Fixtures the end-to-end tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.testing.cache import RunningCache, start_cache_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningCache]:
    """A real `kiln cache serve` on 127.0.0.1 with a fresh root and its first upload user."""
    running = start_cache_server(tmp_path / "cache")
    yield running
    running.stop()
