"""Session fixtures shared by the releases' tests: one cache, one snapshot, one cold build.

The cold build of software/wendelin (the only slow compile) runs once per session and
uploads every part; the other tests and releases then hit the cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.software.build import BuildResult
from kiln.software.seed import seed_debian_package, seed_npm_package
from kiln.testing.fluentd import seed_fluentd_source
from kiln.testing.releases import (
    DEBIAN_SOURCES,
    NPM_PACKAGES,
    CacheFixture,
    build_snapshot_release,
    snapshot_repository,
    start_test_cache,
)


@pytest.fixture(scope="session")
def release_cache(tmp_path_factory: pytest.TempPathFactory):
    """A real `kiln cache serve`, seeded with the sources the releases build: Debian's, npm's,
    and fluentd's archive from ../shared/peers/ under its upstream URL (as an offline site is)."""
    running = start_test_cache(tmp_path_factory.mktemp("release-cache"))
    client = running.client(upload=True)
    for spec in DEBIAN_SOURCES:
        seed_debian_package(client, spec)
    for spec in NPM_PACKAGES:  # software/wendelin's dygraphs: images build with no registry
        seed_npm_package(client, spec)
    seed_fluentd_source(client)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def source_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_repository(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="session")
def wendelin_cold_build(
    release_cache: CacheFixture, source_snapshot: Path, tmp_path_factory: pytest.TempPathFactory
) -> BuildResult:
    return build_snapshot_release(
        source_snapshot,
        "wendelin",
        tmp_path_factory.mktemp("wendelin-cold"),
        release_cache.config(upload=True),
    )
