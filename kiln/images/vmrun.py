"""`kiln image run`: one VM in the foreground for a supervisor (software/kvm's instance).

The images runner (kiln/images/qemu.py) boots the disk on a throwaway overlay with a NoCloud
seed and the serial console in a file; this process serves the guest's readiness over HTTP,
read from that console: 200 once the guest printed its `kiln-ready` line, 503 with how far the
boot got otherwise.  A health check of this URL is the guest's readiness, not qemu's
forwarded ports (which listen as soon as qemu runs, whatever the disk boots).  SIGTERM powers
the VM off (ACPI, then kill) and exits.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from kiln.images.qemu import VM, console_status


def readiness(vm: VM) -> tuple[int, dict]:
    """The HTTP status and JSON body that say whether the guest is ready, and why not."""
    text = vm.console.read_text(errors="replace") if vm.console.exists() else ""
    state, detail = console_status(text)
    body = {"ready": state is True, "seconds": round(vm.ready_seconds())}
    if state:
        body["ports"] = json.loads(detail)
    else:
        body["detail"] = detail
    return (200 if state else 503), body


def serve_readiness(vm: VM, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = readiness(vm)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # health checks poll: keep logs quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_vm(
    vm: VM, status_host: str, status_port: int, progress=print, stop_timeout: float = 30
) -> int:
    """Start ``vm``, serve its readiness until qemu exits or SIGTERM; answer the exit code."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    vm.start()
    server = serve_readiness(vm, status_host, status_port)
    forwards = ", ".join(f"{vm.host}:{h} -> guest {g}" for g, h in vm.ports.items())
    progress(f"qemu runs {vm.image} (console: {vm.console}); forwards: {forwards}")
    progress(f"readiness: http://{status_host}:{status_port}/")
    announced = False
    try:
        while not stopping.is_set():
            assert vm.process is not None
            if vm.process.poll() is not None:
                progress(f"qemu exited ({vm.process.returncode}); see {vm.workdir}/qemu.log")
                return vm.process.returncode or 1
            if not announced and readiness(vm)[0] == 200:
                progress(f"the guest is ready after {vm.ready_seconds():.0f} s")
                announced = True
            time.sleep(1)
        progress("stopping the VM (ACPI power-off)")
        vm.stop(timeout=stop_timeout)
        return 0
    finally:
        server.shutdown()
        vm.stop(timeout=5)


def vm_for(
    image: Path,
    state_dir: Path,
    forwards: dict[int, int],
    host: str = "127.0.0.1",
    memory_mb: int = 1536,
    cpus: int = 2,
) -> VM:
    """A VM of the images runner whose forwarded ports are fixed (guest port -> host port)."""
    return VM(
        image,
        state_dir,
        guest_ports=sorted(forwards),
        hostname="kiln-vm",
        host=host,
        memory_mb=memory_mb,
        cpus=cpus,
        ports=dict(forwards),
    )
