"""Run a real `wendelin serve` process for tests and the benchmark (127.0.0.1, free ports)."""

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli(*arguments: str) -> str:
    """Run ``python -m wendelin ARGS`` and return its output (raises on failure)."""
    return subprocess.run(
        [sys.executable, "-m", "wendelin", *arguments],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def add_policy(root: str, name: str, *options: str) -> dict[str, str]:
    """Create a policy through the CLI; its credentials as a dict (user, password, shared_key)."""
    return json.loads(cli("policy", "add", "--root", root, name, "--json", *options))


class ServerProcess:
    """One service process; ``kill()`` is SIGKILL, ``start()`` again reuses root and ports."""

    def __init__(self, root: str, *extra: str, log_path: str | None = None) -> None:
        self.root = root
        self.http_port = free_port()
        self.forward_port = free_port()
        self.extra = extra
        self.log_path = log_path or os.path.join(root, "server.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def tls_certificate(self) -> str | None:
        """The PEM certificate the HTTP port serves (``--tls-cert``), trusted by ``get``."""
        if "--tls-cert" in self.extra:
            return self.extra[self.extra.index("--tls-cert") + 1]
        return None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_certificate else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        os.makedirs(self.root, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wendelin",
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
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                health = requests.get(
                    self.url + "/healthz", timeout=1, verify=self.tls_certificate or True
                )
                if health.ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server did not start: {self.log()}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()[-4000:]

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


def self_signed(directory: "os.PathLike[str] | str") -> tuple[str, str]:
    """A certificate and key for 127.0.0.1 (PEM paths in ``directory``), for TLS tests."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path
