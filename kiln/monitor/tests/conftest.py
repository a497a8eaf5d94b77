"""fluentd 1.16.11 from ../shared/peers/, unpacked once per session and verified by the pin."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kiln.testing.fluentd import unpacked_fluentd


@pytest.fixture(scope="session")
def fluentd_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed (.ci/apt-packages.txt lists it)")
    return unpacked_fluentd(tmp_path_factory.mktemp("fluentd"))
