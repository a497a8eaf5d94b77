"""A full disk answers 503 + Retry-After (HTTP) or no ack (forward), and heals when freed.

The service root lives on a 2 MiB tmpfs mounted for the test (needs root, as in CI).
"""

import os
import subprocess

import msgpack
import pytest
import requests

from kiln.testing.forward_client import ForwardClient
from kiln.testing.wendelin import ServerProcess, add_policy
from kiln.wendelin import eventtime

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def chunk(number: int, size: int) -> bytes:
    return msgpack.packb(
        [eventtime.pack(1_700_000_000 + number), {"n": number, "pad": b"x" * size}]
    )


def test_full_disk_is_transient_and_loses_nothing(small_disk, tmp_path) -> None:
    root = str(small_disk / "root")
    credentials = add_policy(root, "disk", "--tag-pattern", "disk.**")
    auth = (credentials["user"], credentials["password"])
    server = ServerProcess(root, log_path=str(tmp_path / "server.log")).start()
    url = f"{server.url}/ingestion_policies/disk/ingest?reference=disk.full"
    try:
        assert requests.post(url, data=chunk(0, 100), auth=auth).status_code == 204
        filler = small_disk / "filler"
        with open(filler, "wb") as out:  # leave roughly 300 KiB free
            free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
            out.write(b"\0" * max(free - 300 * 1024, 0))
        accepted = [0]
        refused = None
        for number in range(1, 20):
            response = requests.post(url, data=chunk(number, 100_000), auth=auth)
            if response.status_code == 204:
                accepted.append(number)
                continue
            refused = (number, response)
            break
        assert refused is not None, "the disk never filled up"
        number, response = refused
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) > 0
        assert "No space left on device" in response.text
        size_when_full = requests.get(f"{server.url}/api/streams/disk.full", auth=auth).json()

        # The forward protocol: no ack, the connection is closed, the client keeps the chunk.
        client = ForwardClient("127.0.0.1", server.forward_port, credentials["shared_key"])
        client.send_packed("disk.full", chunk(1000, 400_000), chunk="full-1")
        with pytest.raises((EOFError, ConnectionError)):
            client.read_ack()
        client.close()
        after = requests.get(f"{server.url}/api/streams/disk.full", auth=auth).json()
        assert after == size_when_full  # nothing appended, nothing torn

        filler.unlink()  # space is back: the very same retries now succeed
        assert requests.post(url, data=chunk(number, 100_000), auth=auth).status_code == 204
        accepted.append(number)
        with ForwardClient("127.0.0.1", server.forward_port, credentials["shared_key"]) as again:
            again.send_packed("disk.full", chunk(1000, 400_000), chunk="full-1")
            assert again.read_ack() == "full-1"
        accepted.append(1000)
        entries = requests.get(
            f"{server.url}/api/streams/disk.full/entries", params={"format": "json"}, auth=auth
        ).json()
        assert [record["n"] for _, record in entries] == accepted
    finally:
        assert server.stop() == 0, server.log()
