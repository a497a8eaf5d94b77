"""Run a real `wendelin serve` process for tests and the benchmark (127.0.0.1, free ports)."""

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from kiln.common.addresses import free_port


def cli(*arguments: str) -> str:
    """Run ``python -m kiln.wendelin ARGS`` and return its output (raises on failure)."""
    return subprocess.run(
        [sys.executable, "-m", "kiln.wendelin", *arguments],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def add_policy(root: str, name: str, *options: str) -> dict[str, str]:
    """Create a policy through the CLI; its credentials as a dict (user, password, shared_key)."""
    return json.loads(cli("policy", "add", "--root", root, name, "--json", *options))


class ServerProcess:
    """One service process; ``kill()`` is SIGKILL, ``start()`` again reuses root and ports."""

    def __init__(
        self,
        root: str,
        *extra: str,
        log_path: str | None = None,
        ca: str | None = None,
        open_files_soft_limit: int | None = None,
    ) -> None:
        """``extra``: more `serve` options; ``ca``: what to trust when they include --tls-cert;
        ``open_files_soft_limit``: start the process with this soft RLIMIT_NOFILE."""
        self.root = root
        self.open_files_soft_limit = open_files_soft_limit
        self.ca = ca
        self.http_port = free_port()
        self.forward_port = free_port()
        self.extra = extra
        self.log_path = log_path or os.path.join(root, "server.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if "--tls-cert" in self.extra else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        os.makedirs(self.root, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kiln.wendelin",
                    "serve",
                    "--root",
                    self.root,
                    "--listen",
                    f"127.0.0.1:{self.http_port}",
                    "--forward-listen",
                    f"127.0.0.1:{self.forward_port}",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit_open_files if self.open_files_soft_limit else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                health = requests.get(self.url + "/healthz", timeout=1, verify=self.ca or True)
                if health.ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server did not start: {self.log()}")

    def _limit_open_files(self) -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files_soft_limit, hard))

    def log(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()[-4000:]

    def rss(self) -> int:
        """The server's resident memory in bytes (Linux /proc)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def open_files(self) -> int:
        """How many file descriptors the server holds (sockets and files)."""
        assert self.process is not None
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or power cut of the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class HealthProbe:
    """Polls ``/healthz`` from a thread while a load runs; ``slowest`` answer in seconds.

    How long the health check waits is how long the event loop was kept from everything
    else: the measure of work that should not run on it.
    """

    def __init__(self, url: str, period: float = 0.02) -> None:
        self.url = url + "/healthz"
        self.period = period
        self.slowest = 0.0
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                started = time.perf_counter()
                session.get(self.url, timeout=30).raise_for_status()
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.answers += 1
                time.sleep(self.period)

    def __enter__(self) -> "HealthProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(60)


@dataclass(frozen=True)
class TestCertificate:
    certificate: str  # PEM, for --tls-cert / --forward-tls-cert
    key: str
    ca: str  # PEM of the authority that issued it: what a client trusts


def server_certificate(directory: "os.PathLike[str] | str") -> TestCertificate:
    """A server certificate for 127.0.0.1 from a fresh authority in ``directory``, for TLS
    tests; the cache's own certificate authority issues it."""
    from kiln.shacache.users import CertificateAuthority

    authority = CertificateAuthority(Path(directory) / "ca")
    certificate, key = authority.issue(
        "127.0.0.1", Path(directory), client=False, hosts=["127.0.0.1"]
    )
    return TestCertificate(str(certificate), str(key), str(authority.cert_path))
