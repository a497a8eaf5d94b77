"""`kiln monitor configure`: what the monitor instance runs at each `kiln instance up`.

It checks the parameters, generates the instance's secrets once (fluentd's shared key for
remote agents, the monitor page's password), writes fluentd's configuration (0600) and the
remote agents' snippet, writes ``etc/monitor.json`` for the monitor service, and has fluentd
itself check its configuration (``fluentd --dry-run``), so a bad value stops `instance up`
with a message that names it instead of a fluentd that restarts forever.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from kiln.common.durable import write_atomically
from kiln.monitor import fluentd_config
from kiln.monitor.agent import restart_program
from kiln.monitor.parameters import MonitorParameters, ParameterError, load

SETTINGS_FILE = Path("etc") / "monitor.json"
CREDENTIALS_FILE = Path("etc") / "monitor-credentials.json"
SHARED_KEY_FILE = Path("etc") / "fluentd-shared-key"
FLUENTD_CONFIG = Path("etc") / "fluentd.conf"
REMOTE_SNIPPET = Path("etc") / "remote-fluentd.conf"
WENDELIN_POLICY_FILE = Path("etc") / "wendelin-default-policy.json"


class ConfigureError(Exception):
    """The instance cannot be configured; the message names the bad input."""


@dataclass(frozen=True)
class Settings:
    """What `kiln monitor serve` reads (etc/monitor.json): no secret, only where they are."""

    instance: str  # the instance directory
    instance_name: str
    hostname: str
    listen_host: str
    port: int
    sample_interval: float
    promise_interval: float
    watch: list[str]
    fluentd_socket: str
    wendelin_url: str
    wendelin_policy_file: str
    credentials_file: str
    database: str

    @classmethod
    def read(cls, instance_root: Path) -> Settings:
        path = instance_root / SETTINGS_FILE
        if not path.is_file():
            raise ConfigureError(f"{path} is missing: run `kiln instance up software/monitor`")
        return cls(**json.loads(path.read_text()))


def _secret(path: Path) -> str:
    """The secret in ``path``, generated (0600) the first time."""
    if path.is_file():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    write_atomically(path, value.encode() + b"\n")
    return value


def _page_credentials(path: Path, url: str) -> dict[str, str]:
    """The monitor page's account; the password is generated once, the URL kept current."""
    current = json.loads(path.read_text()) if path.is_file() else {}
    credentials = {
        "url": url,
        "user": current.get("user", "monitor"),
        "password": current.get("password") or secrets.token_urlsafe(24),
    }
    if credentials != current:
        write_atomically(path, json.dumps(credentials, indent=2).encode() + b"\n")
    return credentials


def default_watch(root: Path) -> list[str]:
    from kiln.software.build import DEFAULT_HOME

    return [str(DEFAULT_HOME / "instance" / "*"), str(root)]


def check_with_fluentd(fluentd: Path, config: Path) -> None:
    """``fluentd --dry-run``: fluentd parses every plugin's parameters without starting."""
    result = subprocess.run(
        [str(fluentd), "--dry-run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).splitlines()
        errors = [line for line in output if "error" in line.lower()] or output[-5:]
        raise ConfigureError(
            f"fluentd refused its configuration {config}:\n  " + "\n  ".join(errors[-5:])
        )


def configure(root: Path, fluentd: Path | None = None) -> Settings:
    root = root.resolve()
    try:
        parameters: MonitorParameters = load(root)
    except ParameterError as error:
        raise ConfigureError(str(error)) from None
    policy_file = root / WENDELIN_POLICY_FILE
    if not policy_file.is_file():
        raise ConfigureError(f"{policy_file} is missing: the Wendelin policy was not created")
    wendelin_policy = json.loads(policy_file.read_text())

    paths = fluentd_config.Paths(root)
    paths.socket_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.socket_dir, 0o700)  # only the instance's user may write to the socket
    paths.pos_dir.mkdir(parents=True, exist_ok=True)
    paths.buffer.parent.mkdir(parents=True, exist_ok=True)

    shared_key = _secret(root / SHARED_KEY_FILE)
    config = fluentd_config.appliance_config(
        parameters, paths, shared_key, wendelin_policy["shared_key"], root.name
    )
    fluentd_changed = _write_if_changed(root / FLUENTD_CONFIG, config.encode())
    snippet = fluentd_config.remote_agent_snippet(parameters, shared_key)
    write_atomically(root / REMOTE_SNIPPET, snippet.encode())
    page_url = f"http://{parameters.host}:{parameters.monitor_port}"
    _page_credentials(root / CREDENTIALS_FILE, page_url)

    settings = Settings(
        instance=str(root),
        instance_name=root.name,
        hostname=parameters.hostname,
        listen_host=parameters.host,
        port=parameters.monitor_port,
        sample_interval=parameters.sample_interval,
        promise_interval=parameters.promise_interval,
        watch=list(parameters.watch) or default_watch(root),
        fluentd_socket=str(paths.socket),
        wendelin_url=f"http://{parameters.host}:{parameters.wendelin_http_port}",
        wendelin_policy_file=str(policy_file),
        credentials_file=str(root / CREDENTIALS_FILE),
        database=str(root / "srv" / "monitor" / "promises.sqlite"),
    )
    settings_changed = _write_if_changed(
        root / SETTINGS_FILE, json.dumps(asdict(settings), indent=2).encode()
    )
    if fluentd is not None:
        check_with_fluentd(fluentd, root / FLUENTD_CONFIG)
    # supervisor restarts a program when its command changes, not when a file it reads
    # does: a running fluentd or monitor is restarted here to read its new configuration.
    if fluentd_changed:
        restart_program(root, "fluentd")
    if settings_changed:
        restart_program(root, "monitor")
    return settings


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    write_atomically(path, data)
    return True
