"""fluentd 1.16.11 from ../shared/peers/, unpacked once per session and verified by the pin."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kiln.buildout.tree_hash import unpack_verified
from kiln.testing.fluentd import fluentd_archive, fluentd_source_option


@pytest.fixture(scope="session")
def fluentd_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bin/fluentd like the component's: the source tree on Debian's Ruby."""
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip("ruby is not installed (.ci/apt-packages.txt lists it)")
    directory = tmp_path_factory.mktemp("fluentd")
    source = directory / "source"
    unpack_verified(fluentd_archive(), source, fluentd_source_option("tree-hash"), "peers")
    program = directory / "fluentd"
    command = f'{ruby} -I {source}/lib {source}/bin/fluentd --disable-shared-socket "$@"'
    program.write_text(f"#!/bin/sh\nexec {command}\n")
    program.chmod(0o755)
    return program
