"""A real PostgreSQL server for tests, from Debian's ``postgresql`` package.

Each test session gets a throwaway cluster: ``initdb`` in a fresh directory under /tmp, a
superuser with a generated password (scram-sha-256, so the tests go through the same
password handling as a deployment), and a server listening on a Unix socket in that
directory only (no TCP port). initdb refuses to run as root, so under root (CI) the cluster
belongs to ``nobody``. The server is stopped by its PID at the end and the directory removed.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUPERUSER = "kiln"


def postgres_bin() -> Path:
    """The bin directory of the newest PostgreSQL installed by Debian's packages."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        raise FileNotFoundError(
            "PostgreSQL is not installed: apt-get install postgresql (.ci/apt-packages.txt)"
        )
    newest = max(candidates, key=lambda path: int(Path(path).parent.parent.name))
    return Path(newest).parent


@dataclass
class PostgresServer:
    directory: Path  # the data directory, the socket and the log
    password: str
    process: subprocess.Popen[bytes]
    _databases: Iterator[int] = field(default_factory=itertools.count)

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """A libpq URL without the password (which goes by file or environment)."""
        host = urllib.parse.quote(str(self.directory), safe="")
        return f"postgresql://{SUPERUSER}@/{database}?host={host}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = f"test_{next(self._databases)}"
        with psycopg.connect(self.url(), password=self.password, autocommit=True) as connection:
            connection.execute(f"create database {name}")
        return self.url(name)

    def write_password_file(self, path: Path) -> Path:
        """The password alone in a 0600 file, as ``--catalog-password-file`` reads it."""
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            stream.write(self.password + "\n")
        return path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the postmaster's PID), then remove the cluster."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(timeout: float = 60.0) -> PostgresServer:
    binaries = postgres_bin()
    directory = Path(tempfile.mkdtemp(prefix="kiln-postgres-"))
    as_user = _unprivileged_user(directory)
    password = secrets.token_urlsafe(24)
    password_file = directory / "initdb-password"
    password_file.write_text(password + "\n")
    if as_user is not None:
        os.chown(password_file, as_user.pw_uid, as_user.pw_gid)
    data = directory / "data"
    _run_as(
        as_user,
        [
            str(binaries / "initdb"),
            "--pgdata",
            str(data),
            "--username",
            SUPERUSER,
            "--auth",
            "scram-sha-256",
            "--pwfile",
            str(password_file),
            "--no-sync",  # a throwaway cluster: no fsync, neither here nor in the server
            "--no-locale",
            "--encoding",
            "UTF8",
        ],
    )
    password_file.unlink()
    log = open(directory / "postgres.log", "ab")  # noqa: SIM115  (the server's, until it ends)
    if as_user is not None:
        os.chown(log.name, as_user.pw_uid, as_user.pw_gid)
    process = subprocess.Popen(
        [
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-k",
            str(directory),  # the Unix socket, in the cluster's private directory
            "-c",
            "listen_addresses=",  # no TCP at all
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "max_connections=40",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        **_user_options(as_user),
    )
    log.close()
    server = PostgresServer(directory, password, process)
    _wait_ready(server, timeout)
    return server


def _unprivileged_user(directory: Path) -> pwd.struct_passwd | None:
    """``nobody`` when running as root (initdb refuses root), owning ``directory``."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    return nobody


def _user_options(user: pwd.struct_passwd | None) -> dict[str, object]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": "/"}


def _run_as(user: pwd.struct_passwd | None, command: list[str]) -> None:
    options = _user_options(user)
    result = subprocess.run(command, capture_output=True, text=True, **options)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr}")


def _wait_ready(server: PostgresServer, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            log = server.log()
            server.stop()
            raise RuntimeError(f"postgres exited ({server.process.returncode}): {log}")
        try:
            psycopg.connect(server.url(), password=server.password, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise TimeoutError(f"postgres did not start in {timeout} s") from None
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the test session; import it into a conftest.py to use it."""
    try:
        postgres_bin()
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    server = start_postgres()
    yield server
    server.stop()
