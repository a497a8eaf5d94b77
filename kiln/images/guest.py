"""What runs inside a booted image: start the instances, report readiness.

systemd runs `kiln image guest up NAME` once per instance (kiln-instance@NAME.service), which
is `kiln instance up` with the parameters baked into /etc/kiln/image.json; and
`kiln image guest ready` (kiln-ready.service), which waits until every instance's health
checks pass, prints one line on the serial console::

    kiln-ready {"wendelin": 8420, "monitor": 8422, "status": 8000}

(or ``kiln-not-ready {...what failed...}`` after the template's ready_timeout), then serves
the same status as JSON over HTTP on the status port.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

IMAGE_JSON = Path("/etc/kiln/image.json")
SOURCE = Path("/opt/kiln/src")
SOFTWARE = Path("/opt/kiln/software")
INSTANCES = Path("/var/lib/kiln/instance")
CONSOLES = (Path("/dev/ttyS0"), Path("/dev/console"))
READY, NOT_READY = "kiln-ready", "kiln-not-ready"


def load_image(path: Path = IMAGE_JSON) -> dict:
    return json.loads(path.read_text())


def up_command(image: dict, name: str, kiln: str = "/opt/kiln/venv/bin/kiln") -> list[str]:
    """`kiln instance up` for one instance of the image (parameters carry no secret)."""
    instance = next((i for i in image["instances"] if i["name"] == name), None)
    if instance is None:
        known = ", ".join(i["name"] for i in image["instances"])
        raise SystemExit(f"no instance {name!r} in {IMAGE_JSON} (known: {known})")
    release = instance["release"]
    command = [
        kiln,
        "instance",
        "up",
        str(SOURCE / release),
        "--root",
        str(INSTANCES / name),
        "--software-dir",
        str(SOFTWARE / release.removeprefix("software/")),
        "--timeout",
        "300",
    ]
    for key, value in instance["parameters"].items():
        command += ["--param", f"{key}={value}"]
    return command


def instance_status(image: dict) -> dict[str, dict]:
    """Per instance: healthy or not, and why (its checks as `kiln instance status` runs them)."""
    from kiln.software.instance import Instance, InstanceError

    result = {}
    for instance in image["instances"]:
        name = instance["name"]
        try:
            checks = Instance(INSTANCES / name).checks()
            ok = bool(checks) and all(c.ok for c in checks)
            why = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)
        except InstanceError as error:
            ok, why = False, str(error)
        result[name] = {"healthy": ok, "ports": instance["ports"], "problem": why or None}
    return result


def ready_line(image: dict, status: dict[str, dict]) -> str:
    if all(s["healthy"] for s in status.values()):
        ports = {i["name"]: i["main_port"] for i in image["instances"]}
        ports["status"] = image["status_port"]
        return f"{READY} {json.dumps(ports)}"
    problems = {name: s["problem"] for name, s in status.items() if not s["healthy"]}
    return f"{NOT_READY} {json.dumps(problems)}"


def announce(line: str) -> None:
    for console in CONSOLES:
        try:
            with open(console, "w") as stream:
                stream.write(f"\n{line}\n")
            return
        except OSError:
            continue
    print(line, flush=True)


def wait_ready(image: dict, timeout: float, interval: float = 1.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        status = instance_status(image)
        if all(s["healthy"] for s in status.values()) or time.monotonic() > deadline:
            return status
        time.sleep(interval)


def serve_status(image: dict, port: int) -> ThreadingHTTPServer:
    """GET / -> {"ready": bool, "line": ..., "instances": {...}} (live)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = instance_status(image)
            line = ready_line(image, status)
            body = json.dumps(
                {"ready": line.startswith(READY + " "), "line": line, "instances": status}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # the journal needs no access log
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def ready_main() -> None:
    image = load_image()
    server = serve_status(image, image["status_port"])
    status = wait_ready(image, image["ready_timeout"])
    announce(ready_line(image, status))
    try:
        threading.Event().wait()
    finally:
        server.shutdown()


def up_main(name: str) -> None:
    """`kiln instance up`, in this process: a second interpreter start and import of the CLI
    costs seconds on an emulated CPU, on the path to readiness."""
    from kiln.software.cli import instance

    command = up_command(load_image(), name)
    instance.main(args=command[2:], prog_name="kiln instance")


def credentials() -> dict[str, dict[str, str]]:
    """Per instance, the credential files its profile generated (read by root only)."""
    from kiln.software.instance import Instance, InstanceError

    result: dict[str, dict[str, str]] = {}
    for instance in load_image()["instances"]:
        name = instance["name"]
        try:
            paths = Instance(INSTANCES / name).description.get("credentials", [])
        except InstanceError:
            paths = []
        result[name] = {
            Path(p).name: Path(p).read_text().strip() for p in paths if Path(p).exists()
        }
    return result
