"""The NoCloud seed for a boot: user-data with the SSH key given for this boot, no password.

The seed is an ISO9660 volume labelled ``cidata``, written by genisoimage or xorriso without
mounting anything (the host kernel may lack iso9660; the guest's reads it).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

USER = "kiln"


class SeedError(Exception):
    pass


def user_data(public_keys: list[str], hostname: str) -> str:
    keys = "\n".join(f"      - {key.strip()}" for key in public_keys)
    return f"""#cloud-config
# Written by kiln for one boot.  SSH takes these keys only; no password is set or accepted.
hostname: {hostname}
manage_etc_hosts: true
ssh_pwauth: false
users:
  - name: {USER}
    shell: /bin/bash
    lock_passwd: true
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    ssh_authorized_keys:
{keys}
"""


def meta_data(hostname: str) -> str:
    # A new instance-id per boot: cloud-init treats the boot as a first boot.
    return f"instance-id: kiln-{secrets.token_hex(8)}\nlocal-hostname: {hostname}\n"


def iso_tool() -> list[str]:
    if tool := shutil.which("genisoimage"):
        return [tool]
    if tool := shutil.which("xorriso"):
        return [tool, "-as", "genisoimage"]
    raise SeedError("no ISO9660 writer: apt-get install genisoimage (or xorriso)")


def write_seed(directory: Path, public_keys: list[str], hostname: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "user-data").write_text(user_data(public_keys, hostname))
    (directory / "meta-data").write_text(meta_data(hostname))
    seed = directory / "seed.iso"
    command = [
        *iso_tool(),
        "-quiet",
        "-output",
        str(seed),
        "-volid",
        "cidata",
        "-joliet",
        "-rock",
        str(directory / "user-data"),
        str(directory / "meta-data"),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SeedError(f"could not write the NoCloud seed: {result.stderr.strip()}")
    return seed
