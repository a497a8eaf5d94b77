"""`kiln image run` (software/kvm's VM): its health is the guest's readiness, not qemu's ports.

A blank disk boots nothing: qemu runs and its forwarded ports listen, yet the readiness URL
answers 503 and says the kernel never started.  Real qemu (TCG), no image bake needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from kiln.common.addresses import free_ports

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="qemu-system-x86 missing"),
]


def test_a_disk_that_boots_nothing_is_not_ready_and_says_why(tmp_path):
    disk = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    ssh, status = free_ports(2)
    run = subprocess.Popen(
        [
            *(sys.executable, "-m", "kiln", "image", "run", str(disk)),
            *("--state-dir", str(tmp_path / "state"), "--forward", f"{ssh}:22"),
            *("--status-listen", f"127.0.0.1:{status}", "--memory", "128", "--accel", "tcg"),
            *("--stop-timeout", "2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()
            try:
                answer = requests.get(f"http://127.0.0.1:{status}/", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.5)
        # qemu's forward listens (what the old health check took for health)...
        socket.create_connection(("127.0.0.1", ssh), timeout=5).close()
        # ...but the guest is not ready, and the answer says how far it got.
        assert answer.status_code == 503
        assert answer.json()["ready"] is False
        assert "the kernel did not start" in answer.json()["detail"]
        assert os.path.getsize(disk) < 1 << 20  # a throwaway overlay: the disk is not written
    finally:
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=40)
    assert run.returncode == 0, output
    assert "stopping the VM" in output
