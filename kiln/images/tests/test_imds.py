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
    assert get("/latest/dynamic/instance-identity/").text == "document"
    assert get("/latest/meta-data/network/interfaces/macs/").text == "52:54:00:12:34:56/"
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


def test_an_ec2_boot_is_an_nvme_disk_ec2_dmi_and_the_stand_in(tmp_path):
    from pathlib import Path

    from kiln.images.ec2 import present_as_ec2
    from kiln.images.qemu import VM

    vm = VM(Path("disk.raw"), tmp_path, [8420], hostname="appliance", ports={22: 2222})
    present_as_ec2(vm)
    try:
        command = " ".join(vm.command(tmp_path / "overlay.qcow2", None))
        assert "-device nvme,serial=kiln-root,drive=root" in command
        assert "if=virtio" not in command  # no NoCloud seed, no virtio disk
        assert f"net=169.254.0.0/16,guestfwd=tcp:169.254.169.254:80-cmd:{sys.executable}" in command
        assert f"kiln.images.imds relay {vm.imds.port}" in command
        assert "manufacturer=Amazon EC2" in command and "uuid=ec2" in command
        public = (tmp_path / "id_ed25519.pub").read_text().strip()
        assert vm.imds.leaves["public-keys/0/openssh-key"].strip() == public
        assert public in vm.imds.user_data
    finally:
        vm.stop()
    assert vm.imds is None  # stopped with the VM
