"""The EC2 instance-metadata stand-in that EC2 images boot against under qemu.

EC2 itself cannot run here; cloud-init's Ec2 datasource only needs what IMDSv2 answers, so a
real HTTP server on 127.0.0.1 plays it (tests/test_images.py boots an EC2 image against it).
These tests ask it what that datasource asks, and pass a request through the relay that
qemu's guestfwd runs for each guest connection.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from kiln.images.imds import TOKEN, TOKEN_TTL, MetadataServer

pytestmark = pytest.mark.integration
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln kiln-boot"


@pytest.fixture
def imds():
    server = MetadataServer(KEY, "#cloud-config\nhostname: x\n", "appliance")
    yield server
    server.stop()


def test_imdsv2_token_then_metadata_and_user_data(imds):
    base = f"http://127.0.0.1:{imds.port}"
    assert requests.put(f"{base}/latest/api/token", timeout=5).status_code == 400  # no TTL
    token = requests.put(f"{base}/latest/api/token", headers={TOKEN_TTL: "21600"}, timeout=5)
    assert token.status_code == 200
    signed = {TOKEN: token.text}

    def get(path, headers=signed):
        return requests.get(f"{base}{path}", headers=headers, timeout=5)

    assert get("/2021-03-23/meta-data/instance-id", {}).status_code == 401  # IMDSv1 refused
    assert get("/2021-03-23/meta-data/instance-id").text == imds.instance_id
    listing = get("/2021-03-23/meta-data/").text.splitlines()
    assert {"instance-id", "placement/", "public-keys/", "local-hostname"} <= set(listing)
    assert get("/latest/meta-data/public-keys/").text == "0=kiln-boot"
    assert get("/latest/meta-data/public-keys/0/").text == "openssh-key"
    assert get("/latest/meta-data/public-keys/0/openssh-key").text.strip() == KEY
    assert get("/latest/meta-data/placement/availability-zone").text == "kiln-local-1a"
    assert get("/2021-03-23/user-data").text.startswith("#cloud-config")
    document = get("/latest/dynamic/instance-identity/document").json()
    assert document["instanceId"] == imds.instance_id
    assert get("/latest/meta-data/nothing").status_code == 404
    assert get("/../etc/passwd").status_code == 404
    assert "GET /2021-03-23/user-data 200" in imds.requests


def test_the_relay_carries_a_guest_connection_to_the_server(imds):
    """What qemu's guestfwd=...-cmd: runs for each connection the guest opens."""
    request = (
        b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n"
        + TOKEN_TTL.encode()
        + b": 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    relay = subprocess.run(
        [sys.executable, "-m", "kiln.images.imds", "relay", str(imds.port)],
        input=request,
        capture_output=True,
        timeout=30,
    )
    assert relay.returncode == 0, relay.stderr
    head, _, body = relay.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and body.decode() in imds.tokens
