"""Prebuilt images through the binary cache: `kiln image push` and `kiln image pull`.

An image and its manifest are two ShaCache blobs; one signed ShaDir entry under
``kiln-image:<name>`` names both.  Pulling verifies each blob's sha512 (the client does, and
resumes a broken download with Range, in the same pull or, from the partial file an
interrupted pull left, in the next one) and that the image is the one its manifest describes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kiln.images import manifest as manifests

KEY_PREFIX = "kiln-image:"
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=,@~-]{0,200}\Z")


class StoreError(Exception):
    pass


def image_key(name: str) -> str:
    if not NAME.match(name) or ".." in name:
        raise StoreError(f"image name {name!r}: letters, digits and . _ + = , @ ~ - only")
    return KEY_PREFIX + name


def push(client, image: Path, name: str) -> dict:
    """Upload IMAGE and its manifest; index them, signed, under kiln-image:NAME."""
    key = image_key(name)
    manifest_file = manifests.manifest_path(image)
    if not manifest_file.is_file():
        raise StoreError(f"{image}: no manifest beside it ({manifest_file.name})")
    data = json.loads(manifest_file.read_text())
    expected = data.get("outputs", {}).get(image.name, {}).get("sha512")
    manifest_sha512 = client.upload(manifest_file, None, {})
    sha512 = client.upload_blob(image)
    if expected and expected != sha512:
        raise StoreError(f"{image} is not the image its manifest describes (sha512 differs)")
    metadata = {
        "sha512": sha512,
        "manifest-sha512": manifest_sha512,
        "file": image.name,
        "bytes": image.stat().st_size,
        "template": data.get("template", {}).get("name", ""),
    }
    client.index(key, metadata)
    return metadata


def pull(client, name: str, output_dir: Path) -> Path:
    """Download the newest trusted image under kiln-image:NAME and its manifest."""
    key = image_key(name)
    entries = client.select(key)
    if not entries:
        reasons = "; ".join(r.reason for r in client.lookup(key)) or "no entry at all"
        raise StoreError(f"no trusted image under {key} ({reasons})")
    entry = entries[0]
    output_dir.mkdir(parents=True, exist_ok=True)
    image = output_dir / Path(entry["file"]).name
    manifest_file = manifests.manifest_path(image)
    # Resumable: an interrupted pull keeps what arrived, and the next one fetches the rest.
    client.download(entry["manifest-sha512"], manifest_file, resume=True)
    client.download(entry["sha512"], image, resume=True)
    described = json.loads(manifest_file.read_text())["outputs"].get(image.name, {})
    if described.get("sha512") != entry["sha512"]:
        raise StoreError(f"{image}: its manifest does not describe this image")
    return image
