"""The forward protocol against a second, independent client: fluent-logger for Node.js.

Our own test client and the server were written from the same reading of the protocol; an
implementation written by others catches what both could get wrong alike (the handshake's
salts and digests, PackedForward framing, gzip chunks, acks). `.ci/run` installs it with
`npm ci`; the fixture does the same when it is missing.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.testing.wendelin import ServerProcess, add_policy, server_certificate

pytestmark = pytest.mark.integration

PEER = Path(__file__).parent / "fluent-logger-node"


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("Node.js and npm are needed: install the Debian packages nodejs and npm")
    if not (PEER / "node_modules" / "fluent-logger").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PEER, check=True)
    return node


def send(node: str, port: int, timeout: float = 60, **options: object) -> dict:
    """Run the Node sender; its summary: how many records were acked, and the errors."""
    done = subprocess.run(
        [node, str(PEER / "send.js"), json.dumps({"port": port, **options})],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.stdout, done.stderr
    return {**json.loads(done.stdout), "exit": done.returncode, "stderr": done.stderr}


@pytest.mark.parametrize(
    ("mode", "count"), [("Message", 40), ("PackedForward", 3000), ("CompressedPackedForward", 3000)]
)
def test_every_mode_with_shared_key_and_user_auth(deployment, node, mode: str, count: int) -> None:
    user, password = deployment.auth("secure")
    label = f"node.{mode.lower()}"
    summary = send(
        node,
        deployment.forward_port,
        tagPrefix="secure",
        label=label,
        mode=mode,
        count=count,
        sharedKey=deployment.secure["shared_key"],
        username=user,
        password=password,
    )
    assert summary["exit"] == 0 and summary["errors"] == [], summary
    assert summary["acked"] == count
    # Acked means stored: every record exactly once, in the order sent.
    records = deployment.records(f"secure.{label}", "secure")
    assert [record["n"] for record in records] == list(range(count))


def test_a_wrong_shared_key_gets_nothing_stored(deployment, node) -> None:
    summary = send(
        node,
        deployment.forward_port,
        timeout=60,
        tagPrefix="sensor",
        label="node.wrongkey",
        mode="PackedForward",
        count=5,
        sharedKey="not the key",
        deadlineMs=3000,
    )
    assert summary["exit"] != 0 and summary["acked"] == 0
    assert "shared_key mismatch" in summary["stderr"] + " ".join(summary["errors"])
    assert deployment.stream("sensor.node.wrongkey") is None


def test_over_tls(tmp_path, node) -> None:
    issued = server_certificate(tmp_path)
    root = str(tmp_path / "root")
    credentials = add_policy(root, "tls")
    options = ("--forward-tls-cert", issued.certificate, "--forward-tls-key", issued.key)
    with ServerProcess(root, *options) as server:
        summary = send(
            node,
            server.forward_port,
            tagPrefix="over",
            label="tls",
            mode="CompressedPackedForward",
            count=500,
            sharedKey=credentials["shared_key"],
            ca=issued.ca,
        )
    assert summary["exit"] == 0 and summary["acked"] == 500, summary
