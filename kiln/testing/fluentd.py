"""Real fluentd 1.16.11 for tests and the benchmark: its source from the shared peers folder,
and fluentd processes run from a config text.

The source archive is not in the repository: tests read it from ``<repo>/../shared/peers/``.
"""

from __future__ import annotations

import configparser
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kiln.software.build import repository_root

FLUENTD_ARCHIVE = "fluentd-1.16.11.tar.gz"


def peers_dir() -> Path:
    return repository_root().parent / "shared" / "peers"


def fluentd_archive() -> Path:
    path = peers_dir() / FLUENTD_ARCHIVE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the tests need the fluentd source archive next to the "
            "repository, in ../shared/peers/"
        )
    return path


def fluentd_source_option(option: str) -> str:
    """An option of [fluentd-source] in component/fluentd/buildout.cfg (url, tree-hash)."""
    parser = configparser.RawConfigParser()
    parser.read(repository_root() / "component" / "fluentd" / "buildout.cfg")
    return parser.get("fluentd-source", option).strip()


def seed_fluentd_source(client) -> None:
    """Put the peers' archive into a cache under the URL the profile downloads."""
    from kiln.software.seed import seed_file

    seed_file(client, fluentd_archive(), fluentd_source_option("url"))


def unpacked_fluentd(directory: Path) -> Path:
    """The peers' fluentd unpacked in ``directory`` (checked against the profile's tree
    hash), with a bin/fluentd like the component's: the source tree on Debian's Ruby."""
    import shutil

    from kiln.buildout.tree_hash import unpack_verified

    ruby = shutil.which("ruby")
    if ruby is None:
        raise FileNotFoundError("ruby is not installed (.ci/apt-packages.txt lists it)")
    source = directory / "source"
    unpack_verified(fluentd_archive(), source, fluentd_source_option("tree-hash"), "peers")
    program = directory / "fluentd"
    command = f'{ruby} -I {source}/lib {source}/bin/fluentd --disable-shared-socket "$@"'
    program.write_text(f"#!/bin/sh\nexec {command}\n")
    program.chmod(0o755)
    return program


@pytest.fixture(scope="session")
def fluentd_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fluentd 1.16.11 from ../shared/peers/, unpacked once per session and verified by the
    pin; import it into a conftest.py to use it."""
    import shutil

    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed (.ci/apt-packages.txt lists it)")
    return unpacked_fluentd(tmp_path_factory.mktemp("fluentd"))


class Fluentd:
    """One fluentd (supervisor + worker) running ``config``; its log in ``directory``."""

    def __init__(
        self, program: Path, directory: Path, config: str, env: dict[str, str] | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path = directory / "fluent.conf"
        # Configurations hold shared keys and passwords: private, and never in argv.
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            stream.write(config)
        self.log_path = directory / "fluentd.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(program), "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := re.search(pattern, self.log()):
                return found
            if self.process.poll() is not None:
                raise RuntimeError(f"fluentd exited ({self.process.returncode}): {self.log()}")
            time.sleep(0.2)
        raise TimeoutError(f"no {pattern!r} in fluentd's log within {timeout} s:\n{self.log()}")

    def wait_running(self, timeout: float = 60.0) -> Fluentd:
        self.wait_log(r"fluentd worker is now running", timeout)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM to fluentd's supervisor: it flushes its buffers, stops its worker, exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> Fluentd:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def tail_source(path: Path, pos: Path, tag: str, keep_time_key: bool = False) -> str:
    """fluentd configuration that tails ``path`` (JSON lines, from its start) as ``tag``, and
    drops fluentd's own log events, which ``<match **>`` would otherwise catch.

    A line's ``time`` is its event time; ``keep_time_key`` leaves it in the record too."""
    return f"""<source>
  @type tail
  path {path}
  pos_file {pos}
  tag {tag}
  read_from_head true
  <parse>
    @type json
    keep_time_key {"true" if keep_time_key else "false"}
  </parse>
</source>
<label @FLUENT_LOG>
  <match **>
    @type null
  </match>
</label>
"""
