"""push/pull through a real `kiln cache serve`, and the EC2 export's requests.

The image here is a small file with a manifest: push and pull move bytes and check them
against the manifest, whatever the disk holds (a real image is pushed in tests/test_images.py's
fixtures only when time allows).  EC2 itself cannot be reached from here: the export is checked
on the requests it writes for import-snapshot and register-image.
"""

from __future__ import annotations

import json

import pytest

from kiln.images import ec2, manifest, store
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
