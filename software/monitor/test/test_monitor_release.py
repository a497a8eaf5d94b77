"""software/monitor: built through the cache, its cache server answers with per-instance creds."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from kiln.software.build import BuildResult
from kiln.testing.releases import (
    CacheFixture,
    assert_software_links_sanely,
    build_snapshot_release,
    free_ports,
    healthy_instance,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def monitor_build(
    wendelin_cold_build: BuildResult,
    release_cache: CacheFixture,
    source_snapshot: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> BuildResult:
    return build_snapshot_release(
        source_snapshot,
        "monitor",
        tmp_path_factory.mktemp("monitor"),
        release_cache.config(upload=True),
    )


def test_shared_parts_come_from_the_cache(monitor_build: BuildResult) -> None:
    outcomes = {name: part["outcome"] for name, part in monitor_build.parts.items()}
    # python3, supervisor and kiln are the same parts as in software/wendelin.
    assert outcomes["supervisor"] == outcomes["kiln"] == "hit"
    assert outcomes["python3"] == "no-files"  # the machine's Python, checked: no file
    assert assert_software_links_sanely(monitor_build.software_dir) > 0


def test_instance_runs_a_cache_server_with_generated_upload_credentials(
    monitor_build: BuildResult, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    root = tmp_path / "instance"
    with healthy_instance(monitor_build.software_dir, root, {"port": str(port)}):
        credentials = root / "etc" / "cache-uploader.txt"
        assert credentials.stat().st_mode & 0o077 == 0
        # `kiln cache adduser` prints a line naming the password, the password last.
        line = next(x for x in credentials.read_text().splitlines() if "password" in x)
        password = line.split()[-1]
        url = f"http://127.0.0.1:{port}/shacache"
        assert requests.post(url, data=b"x", timeout=10).status_code == 401
        answer = requests.post(url, data=b"x", auth=("uploader", password), timeout=10)
        assert answer.status_code == 201
