"""Instances of built releases: render with the release's instance profile, run under supervisor.

`up` runs buildout on ``<software-dir>/instance.cfg`` in the instance directory (the
instance's parameters go into a generated ``kiln-instance.cfg``), then starts supervisord
or, when it runs already, tells it to apply the new configuration.  Running `up` again with
the same parameters changes nothing: buildout finds every part up to date, credentials are
kept, and supervisor keeps its processes.

The instance profile writes ``etc/kiln-instance.json``: which supervisor to use and the
health checks (``tcp: HOST:PORT`` or ``http: URL``) that `status` runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kiln.common.addresses import parse_host_port
from kiln.software.build import DEFAULT_HOME, BuildError, run_buildout

DESCRIPTION = Path("etc") / "kiln-instance.json"
GENERATED_PROFILE = "kiln-instance.cfg"


class InstanceError(Exception):
    """The instance cannot be brought up, or its state cannot be read; says why."""


def default_root(release_name: str) -> Path:
    return DEFAULT_HOME / "instance" / release_name


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Instance:
    root: Path

    @property
    def description(self) -> dict:
        path = self.root / DESCRIPTION
        if not path.is_file():
            raise InstanceError(f"{self.root} is not an instance (no {DESCRIPTION})")
        return json.loads(path.read_text())

    def _supervisorctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        description = self.description
        command = [
            str(Path(description["supervisor-bin"]) / "supervisorctl"),
            "-c",
            description["supervisord-conf"],
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True)

    def supervisord_running(self) -> bool:
        pidfile = self.root / "var" / "run" / "supervisord.pid"
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def start(self) -> None:
        description = self.description
        if self.supervisord_running():
            result = self._supervisorctl("update")
        else:
            command = [
                str(Path(description["supervisor-bin"]) / "supervisord"),
                "-c",
                description["supervisord-conf"],
            ]
            result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise InstanceError(f"supervisor failed: {(result.stderr or result.stdout).strip()}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every process and supervisord; answer whether something was running."""
        if not self.supervisord_running():
            return False
        self._supervisorctl("shutdown")
        pidfile = self.root / "var" / "run" / "supervisord.pid"
        deadline = time.monotonic() + timeout
        while self.supervisord_running():
            if time.monotonic() > deadline:
                raise InstanceError(f"supervisord in {self.root} did not stop in {timeout:.0f} s")
            time.sleep(0.2)
        pidfile.unlink(missing_ok=True)
        return True

    def checks(self) -> list[Check]:
        results: list[Check] = []
        if not self.supervisord_running():
            results.append(Check("supervisord", False, "not running (kiln instance up)"))
        else:
            status = self._supervisorctl("status")
            for line in status.stdout.splitlines():
                fields = line.split(None, 2)
                if len(fields) >= 2:
                    running = fields[1] == "RUNNING"
                    detail = " ".join(fields[1:])
                    if not running:
                        detail += self._last_log_line(fields[0])
                    results.append(Check(f"process {fields[0]}", running, detail))
        for check in self.description.get("checks", []):
            results.append(run_check(check))
        return results

    def _last_log_line(self, program: str) -> str:
        log = self.root / "var" / "log" / f"{program}.log"
        try:
            lines = log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f"; last log line ({log}): {lines[-1]}" if lines else ""

    def healthy(self) -> bool:
        return all(check.ok for check in self.checks())

    def wait_healthy(self, timeout: float) -> list[Check]:
        deadline = time.monotonic() + timeout
        while True:
            results = self.checks()
            if all(c.ok for c in results) or time.monotonic() > deadline:
                return results
            time.sleep(0.5)


def run_check(check: dict) -> Check:
    name = check.get("name", "check")
    if "tcp" in check:
        try:
            with socket.create_connection(parse_host_port(check["tcp"]), timeout=2):
                return Check(name, True, f"{check['tcp']} accepts connections")
        except OSError as error:
            return Check(name, False, f"{check['tcp']}: {error.strerror or error}")
    if "http" in check:
        try:
            with urllib.request.urlopen(check["http"], timeout=5) as response:
                return Check(name, True, f"{check['http']} answered {response.status}")
        except urllib.error.HTTPError as error:
            # A health endpoint answers 2xx; anything else is a failure (or another server),
            # whose reason is shown when the answer gives one ({"detail": ...} or a line).
            return Check(name, False, f"{check['http']} answered {error.code}{_reason(error)}")
        except (urllib.error.URLError, OSError) as error:
            return Check(name, False, f"{check['http']}: {getattr(error, 'reason', error)}")
    return Check(name, False, f"unknown check {check!r}")


def _reason(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read(2000).decode(errors="replace").strip()
    except OSError:
        return ""
    try:
        detail = json.loads(text).get("detail", "")
    except (ValueError, AttributeError):
        detail = text.splitlines()[0] if text else ""
    return f": {str(detail)[:300]}" if detail else ""


def write_instance_profile(root: Path, software_dir: Path, parameters: dict[str, str]) -> Path:
    lines = [
        "# Generated by `kiln instance up`: the release's instance profile and its parameters.",
        "[buildout]",
        f"extends = {software_dir / 'instance.cfg'}",
        f"directory = {root}",
        "",
        "[instance-parameter]",
        *(f"{key} = {value}" for key, value in sorted(parameters.items())),
        "",
    ]
    profile = root / GENERATED_PROFILE
    profile.write_text("\n".join(lines))
    return profile


def instantiate(
    software_dir: Path, root: Path, parameters: dict[str, str], quiet: bool = True
) -> Instance:
    """Render the instance in ``root`` from a built release; idempotent."""
    if not (software_dir / "instance.cfg").is_file():
        raise InstanceError(
            f"{software_dir} has no instance.cfg: build the release first "
            "(kiln software build software/NAME)"
        )
    root.mkdir(parents=True, exist_ok=True)
    profile = write_instance_profile(root, software_dir, parameters)
    try:
        run_buildout(profile, root, quiet=quiet)
    except BuildError as error:
        raise InstanceError(str(error)) from error
    return Instance(root)
