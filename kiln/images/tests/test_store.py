"""push/pull through a real `kiln cache serve`, and the EC2 export's requests.

Most images here are small files with a manifest: push and pull move bytes and check them
against the manifest, whatever the disk holds.  One real qcow2 (made by qemu-img) goes through
the `kiln image push|pull` commands, with a pull killed half-way and resumed by the next.
EC2 itself cannot be reached from here: the export is checked on the requests it writes for
import-snapshot and register-image.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from kiln.images import ec2, manifest, store
from kiln.shacache.client import partial_path
from kiln.testing.cutting_proxy import CuttingProxy
from kiln.testing.releases import start_test_cache


def fake_image(directory, name="app", ec2_image=False, content=b"\x00disk" * 1000):
    directory.mkdir(parents=True, exist_ok=True)
    image = directory / f"{name}.qcow2"
    image.write_bytes(content)
    data = {
        "template": {"name": name, "sha256": "t"},
        "outputs": {image.name: {"sha512": manifest.sha512_file(image), "bytes": len(content)}},
        "ec2": ec2_image,
    }
    manifest.write_manifest(image, data)
    return image


@pytest.fixture
def cache(tmp_path):
    running = start_test_cache(tmp_path / "cache")
    yield running
    running.stop()


@pytest.mark.integration
def test_push_then_pull_verifies_image_and_manifest(cache, tmp_path):
    image = fake_image(tmp_path / "built")
    metadata = store.push(cache.client(upload=True), image, "appliance-test")
    assert metadata["sha512"] == manifest.sha512_file(image)
    pulled = store.pull(cache.client(), "appliance-test", tmp_path / "pulled")
    assert pulled.read_bytes() == image.read_bytes()
    assert manifest.manifest_path(pulled).read_text() == manifest.manifest_path(image).read_text()


@pytest.mark.integration
def test_pull_refuses_untrusted_and_missing_images(cache, tmp_path):
    image = fake_image(tmp_path / "built")
    store.push(cache.client(upload=True), image, "signed")
    from kiln.shacache.client import CacheClient
    from kiln.shacache.keys import TrustList

    trust = TrustList()
    trust.add_public_key(cache.stranger_public_key)
    stranger = CacheClient.from_url(cache.server.url, trust=trust, upload=False)
    with pytest.raises(store.StoreError, match="no trusted image under kiln-image:signed"):
        store.pull(stranger, "signed", tmp_path / "x")
    with pytest.raises(store.StoreError, match="no entry at all"):
        store.pull(cache.client(), "absent", tmp_path / "x")


@pytest.mark.integration
def test_push_refuses_an_image_its_manifest_does_not_describe(cache, tmp_path):
    image = fake_image(tmp_path / "built")
    image.write_bytes(b"changed after the bake")
    with pytest.raises(store.StoreError, match="not the image its manifest describes"):
        store.push(cache.client(upload=True), image, "tampered")


@pytest.mark.unit
def test_image_names_are_checked():
    assert store.image_key("appliance-1.0") == "kiln-image:appliance-1.0"
    with pytest.raises(store.StoreError):
        store.image_key("../etc")


@pytest.mark.unit
def test_export_ec2_writes_raw_and_requests(tmp_path):
    image = fake_image(tmp_path / "built", ec2_image=True)
    with pytest.raises(ec2.ExportError, match="ec2: true"):
        ec2.export(fake_image(tmp_path / "plain"), tmp_path / "out", "bucket")
    files = ec2.export(image, tmp_path / "out", "my-bucket")
    assert files["raw"].stat().st_size > 0
    imported = json.loads(files["import"].read_text())
    assert imported["DiskContainer"] == {
        "Format": "raw",
        "UserBucket": {"S3Bucket": "my-bucket", "S3Key": "app-ec2.raw"},
    }
    register = json.loads(files["register"].read_text())
    assert register["EnaSupport"] is True and register["BootMode"] == "legacy-bios"
    assert register["BlockDeviceMappings"][0]["DeviceName"] == register["RootDeviceName"]
    assert any("import-snapshot" in line for line in ec2.commands(files, "my-bucket"))


def real_qcow2(directory, megabytes: int = 12):
    """A qcow2 made by qemu-img from random data (incompressible), with its manifest."""
    raw = directory / "disk.raw"
    directory.mkdir(parents=True, exist_ok=True)
    raw.write_bytes(os.urandom(megabytes << 20))
    image = directory / "small.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(image)], check=True)
    raw.unlink()
    data = {
        "template": {"name": "small", "sha256": "t"},
        "outputs": {image.name: {"sha512": manifest.sha512_file(image)}},
    }
    manifest.write_manifest(image, data)
    return image


def kiln_image(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kiln", "image", *args],
        env={**os.environ, "KILN_CACHE_URL": "", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-utils missing")
def test_push_a_qcow2_then_a_killed_pull_resumes_from_its_partial_file(cache, tmp_path):
    image = real_qcow2(tmp_path / "built")
    size = image.stat().st_size
    trust = ["--trust", cache.public_key]
    credentials = {"KILN_CACHE_USER": "uploader", "KILN_CACHE_PASSWORD": cache.server.password}
    push = kiln_image(
        "push", str(image), "--key", "small", "--cache", cache.server.url, *trust,
        "--sign-with", str(cache.key_dir / "builder.key"), env=credentials,
    )  # fmt: skip
    assert push.wait(60) == 0, push.stdout.read()
    port = int(cache.server.url.rsplit(":", 1)[1])
    out = tmp_path / "pulled"
    sha512 = manifest.sha512_file(image)
    partial = partial_path(out / image.name, sha512)

    # A network that hangs after 5 MB: the pull waits, and is killed.
    hung = CuttingProxy(port, cut_after=5 << 20, stall=True)
    try:
        pull = kiln_image("pull", "small", "--cache", hung.url, *trust, "-o", str(out), env={})
        deadline = time.monotonic() + 60
        while not (hung.cuts and partial.exists() and partial.stat().st_size > 4 << 20):
            assert time.monotonic() < deadline and pull.poll() is None, pull.stdout.read()
            time.sleep(0.2)
        time.sleep(0.5)  # what the proxy sent is written
        pull.send_signal(signal.SIGKILL)
        pull.wait(10)
    finally:
        hung.stop()
    kept = partial.stat().st_size
    assert 4 << 20 < kept < size and not (out / image.name).exists()

    # The next pull asks only for the rest, and checks the whole against the manifest.
    proxy = CuttingProxy(port, cut_after=None)
    try:
        pull = kiln_image("pull", "small", "--cache", proxy.url, *trust, "-o", str(out), env={})
        assert pull.wait(60) == 0, pull.stdout.read()
    finally:
        proxy.stop()
    assert manifest.sha512_file(out / image.name) == sha512
    assert not partial.exists()
    # The manifest came whole in the first pull; the image's missing part and small answers
    # (the entry lookup, headers) in the second.
    assert proxy.answered < size - kept + 64 * 1024, (proxy.answered, size, kept)
    print(f"image {size} bytes; killed pull kept {kept}; the next fetched {proxy.answered}")
