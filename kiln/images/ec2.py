"""`kiln image export-ec2`: the raw image and the requests for EC2's import-snapshot and
register-image.

kiln does not call AWS: the user runs the printed `aws` commands with their own credentials
(an S3 bucket and the vmimport role are theirs).  The image must be baked with `ec2: true` in
its template (nvme/ena/xen-blkfront in the initramfs, cloud-init's Ec2 datasource).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from kiln.images import manifest as manifests


class ExportError(Exception):
    pass


def register_request(name: str, snapshot_id: str = "SNAPSHOT_ID") -> dict:
    return {
        "Name": name,
        "Architecture": "x86_64",
        "VirtualizationType": "hvm",
        "BootMode": "legacy-bios",  # GRUB on MBR
        "EnaSupport": True,
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {"SnapshotId": snapshot_id, "DeleteOnTermination": True},
            }
        ],
    }


def import_request(bucket: str, key: str, description: str) -> dict:
    return {
        "Description": description,
        "DiskContainer": {"Format": "raw", "UserBucket": {"S3Bucket": bucket, "S3Key": key}},
    }


def export(image: Path, output_dir: Path, bucket: str, require_ec2: bool = True) -> dict[str, Path]:
    data = json.loads(manifests.manifest_path(image).read_text())
    if require_ec2 and not data.get("ec2"):
        raise ExportError(
            f"{image}: baked without `ec2: true` (no nvme/ena drivers, no Ec2 datasource); "
            "set it in the template and bake again, or pass --force"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    name = data["template"]["name"]
    raw = output_dir / f"{name}-ec2.raw"
    if image.suffix == ".raw":
        shutil.copyfile(image, raw)
    else:
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    files = {"raw": raw}
    files["import"] = output_dir / f"{name}-ec2-import-snapshot.json"
    files["import"].write_text(json.dumps(import_request(bucket, raw.name, name), indent=2))
    files["register"] = output_dir / f"{name}-ec2-register-image.json"
    files["register"].write_text(json.dumps(register_request(name), indent=2))
    return files


def commands(files: dict[str, Path], bucket: str) -> list[str]:
    return [
        f"aws s3 cp {files['raw']} s3://{bucket}/{files['raw'].name}",
        f"aws ec2 import-snapshot --cli-input-json file://{files['import']}",
        "aws ec2 describe-import-snapshot-tasks   # wait for SnapshotId",
        f"(set SnapshotId in {files['register'].name}) "
        f"aws ec2 register-image --cli-input-json file://{files['register']}",
    ]
