"""EC2 images: `kiln image export-ec2` (the raw image and the requests for EC2's
import-snapshot and register-image), and booting them under qemu as EC2 presents them.

kiln does not call AWS: the user runs the printed `aws` commands with their own credentials
(an S3 bucket and the vmimport role are theirs).  The image must be baked with `ec2: true` in
its template (nvme/ena/xen-blkfront in the initramfs, cloud-init's Ec2 datasource).

EC2 itself cannot run here, so `kiln image test` boots an EC2 image the way EC2 would present
it as far as qemu can: the root disk on an NVMe controller (as on Nitro instances: the
initramfs must have nvme, and the root is found by LABEL/UUID, since the device is
/dev/nvme0n1, not /dev/vda), the DMI of an EC2 machine (vendor "Amazon EC2", a system UUID
starting with ec2), no NoCloud seed, and the instance metadata service at 169.254.169.254
played by kiln/images/imds.py (IMDSv2, with the boot's SSH key and user-data).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

from kiln.images import manifest as manifests
from kiln.images import seed
from kiln.images.qemu import VM, make_ssh_key

# Drivers an EC2 instance type may need at boot: Nitro's disks and NIC, Xen's disks.
INITRAMFS_MODULES = ("nvme", "ena", "xen-blkfront")


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


def present_as_ec2(vm: VM) -> None:
    """Make ``vm`` boot as an EC2 instance: NVMe root disk, IMDSv2 stand-in, no NoCloud seed."""
    from kiln.images.imds import MetadataServer, smbios

    vm.workdir.mkdir(parents=True, exist_ok=True)
    vm.ssh_key = make_ssh_key(vm.workdir)
    public = vm.ssh_key.with_suffix(".pub").read_text()
    # The user-data a user would give at launch: the same as the NoCloud seed's.
    vm.imds = MetadataServer(public, seed.user_data([public], vm.hostname), vm.hostname)
    vm.disk, vm.nocloud = "nvme", False
    vm.network = [*vm.network, *vm.imds.guestfwd()]
    vm.machine = [*vm.machine, *smbios(vm.imds.instance_id)]


class EC2CheckFailed(Exception):
    pass


def check_ec2_boot(vm: VM) -> str:
    """Read over SSH that the guest booted as an EC2 image: cloud-init used the Ec2 datasource
    and this boot's metadata (its instance id, its key), the root is the NVMe disk mounted by
    LABEL or UUID, and the initramfs has the EC2 drivers."""
    imds = vm.imds
    assert imds is not None, "not booted with present_as_ec2"
    status = vm.ssh("cloud-init", "status", "--long", check=False).stdout
    if "DataSourceEc2" not in status:
        raise EC2CheckFailed(f"cloud-init did not use the Ec2 datasource: {status.strip()}")
    instance_id = vm.ssh("sudo", "cloud-init", "query", "v1.instance_id").stdout.strip()
    if instance_id != imds.instance_id:
        raise EC2CheckFailed(f"cloud-init's instance id {instance_id!r}, not {imds.instance_id}")
    asked = imds.requests
    for wanted in ("PUT /latest/api/token 200", "/user-data 200", "/public-keys/0/openssh-key"):
        if not any(wanted in line for line in asked):
            raise EC2CheckFailed(f"the guest never asked {wanted!r} of IMDS: {asked}")
    if any(line.endswith(" 401") for line in asked):
        raise EC2CheckFailed(f"the guest asked IMDS without a token (IMDSv1): {asked}")
    key = vm.ssh_key.with_suffix(".pub").read_text().split()[1] if vm.ssh_key else "?"
    root_keys = vm.ssh("sudo", "cat", "/root/.ssh/authorized_keys", check=False).stdout
    if key not in root_keys:
        raise EC2CheckFailed("the meta-data's public key did not reach the guest")
    source = vm.ssh("findmnt", "-n", "-o", "SOURCE", "/").stdout.strip()
    if not source.startswith("/dev/nvme"):
        raise EC2CheckFailed(f"/ is mounted from {source!r}, not the NVMe disk")
    # ssh hands the remote shell one command line: quote what it must not split.
    fstab = vm.ssh("awk", shlex.quote('$2 == "/" {print $1}'), "/etc/fstab").stdout.strip()
    if not fstab.startswith(("LABEL=", "UUID=")):
        raise EC2CheckFailed(f"/etc/fstab mounts / from {fstab!r}, not by LABEL or UUID")
    initramfs = vm.ssh("sudo", "lsinitramfs", '"/boot/initrd.img-$(uname -r)"').stdout
    missing = [m for m in INITRAMFS_MODULES if f"/{m}.ko" not in initramfs]
    if missing:
        raise EC2CheckFailed(f"the initramfs lacks {', '.join(missing)}")
    return (
        f"cloud-init used DataSourceEc2 (IMDSv2, {len(asked)} requests, instance {instance_id});"
        f" / is {source} ({fstab}); initramfs has {', '.join(INITRAMFS_MODULES)}"
    )
