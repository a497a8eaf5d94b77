"""Start a real `kiln cache serve` for tests, benchmarks and other parts of the repository."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from kiln.common.addresses import free_port


@dataclass
class RunningCache:
    root: Path
    url: str
    user: str
    password: str
    process: subprocess.Popen
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def upload_url(self) -> str:
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{self.user}:{self.password}@{rest}"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_cache_server(
    root: Path,
    *extra_args: str,
    port: int | None = None,
    scheme: str = "http",
    ca_file: str | None = None,
    timeout: float = 30.0,
) -> RunningCache:
    """Start the server as a subprocess on a free port and wait until it answers /health.

    On a new root, the server creates the upload user and writes its password to
    ``<root>/initial-upload-credential``, where it is read.  On a root that has users
    already and no such file, ``password`` is empty.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = root.parent / f"{root.name}-server-{port}.log"
    args = [
        sys.executable,
        "-m",
        "kiln",
        "cache",
        "serve",
        "--root",
        str(root),
        "--listen",
        f"127.0.0.1:{port}",
        *extra_args,
    ]
    log_file = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    log_file.close()
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"kiln cache serve exited: {log_path.read_text()}")
        try:
            requests.get(f"{url}/health", timeout=2, verify=ca_file or False)
            break
        except requests.RequestException:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"kiln cache serve did not start: {log_path.read_text()}"
                ) from None
            time.sleep(0.1)
    # A new root's upload credential is in a private file, never in the log.
    credential = root / "initial-upload-credential"
    text = credential.read_text() if credential.exists() else ""
    match = re.search(r"^KILN_CACHE_PASSWORD=(\S+)$", text, re.MULTILINE)
    return RunningCache(root, url, "uploader", match[1] if match else "", process, log_path, args)


def cache_command(
    *args: str, cwd: Path, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``kiln cache ARGS`` as a user would, in ``cwd``; with ``ok``, it must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", "kiln", "cache", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result
