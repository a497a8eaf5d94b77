"""The checks `kiln image test` runs from outside a booted image, through forwarded ports."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from kiln.images.qemu import SSH_PORT, VM

OCTETS = {"Content-Type": "application/octet-stream"}


class CheckFailed(Exception):
    pass


@dataclass
class Result:
    name: str
    ok: bool
    detail: str
    seconds: float


def main_port(image: dict, instance: str) -> int:
    """The guest port of an instance's first declared port (image.json)."""
    found = next(i for i in image["instances"] if i["name"] == instance)
    return found["main_port"]


def guest_ports(image: dict) -> list[int]:
    ports = {p for i in image["instances"] for p in i["ports"].values()}
    return sorted(ports | {image["status_port"]})


def url(vm: VM, guest_port: int, path: str = "/") -> str:
    return f"http://127.0.0.1:{vm.ports[guest_port]}{path}"


def wendelin_login(credentials: dict[str, dict[str, str]], instance: str) -> dict[str, str]:
    """The ingestion policy generated at first boot: policy, user, password."""
    for text in credentials.get(instance, {}).values():
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict) and {"policy", "user", "password"} <= data.keys():
            return data
    raise CheckFailed(f"no ingestion policy credentials generated in instance {instance!r}")


def check_ingest(vm: VM, image: dict, instance: str, credentials) -> str:
    """HTTP ingest answers 204, and a chunk that fluentd resends is stored once."""
    import msgpack

    port = main_port(image, instance)
    login = wendelin_login(credentials, instance)
    auth = (login["user"], login["password"])
    tag = f"image.test{secrets.token_hex(3)}"
    record = requests.post(
        url(vm, port, f"/tags/{tag}"), json={"check": "kiln image test"}, auth=auth, timeout=30
    )
    if record.status_code != 204:
        raise CheckFailed(f"POST /tags/{tag}: {record.status_code} {record.text[:200]}, not 204")
    # fluent-plugin-wendelin's protocol: a msgpack chunk of [time, record] entries.
    policy = login["policy"]
    chunk = b"".join(msgpack.packb([int(time.time()) + i, {"n": i}]) for i in range(3))
    target = url(vm, port, f"/ingestion_policies/{policy}/ingest?reference={tag}.chunk")
    answers = [
        requests.post(target, data=chunk, auth=auth, timeout=30, headers=OCTETS) for _ in (1, 2)
    ]
    if [a.status_code for a in answers] != [204, 204]:
        raise CheckFailed(f"chunk and its resend: {[a.status_code for a in answers]}, not 204")
    streams = requests.get(url(vm, port, "/api/streams"), auth=auth, timeout=30)
    streams.raise_for_status()
    entries = [s["entries"] for s in streams.json() if s["name"].endswith(f"{tag}.chunk")]
    if entries != [3]:
        raise CheckFailed(f"a resent chunk of 3 entries must be stored once; stream: {entries}")
    duplicate = answers[1].headers.get("X-Wendelin-Duplicate", "no header")
    return f"204; a resent chunk is stored once (X-Wendelin-Duplicate: {duplicate})"


def check_monitor(vm: VM, image: dict, instance: str, credentials) -> str:
    port = main_port(image, instance)
    answer = requests.get(url(vm, port, "/healthz"), timeout=30)
    if answer.status_code != 200:
        raise CheckFailed(f"monitor page /healthz: {answer.status_code}")
    return "monitor page /healthz answers 200"


def check_ssh(vm: VM, image: dict, instance, credentials) -> str:
    """SSH logs in with the key given in user-data, and offers no password login."""
    result = vm.ssh("id", "-un")
    if result.stdout.strip() != "kiln":
        raise CheckFailed(f"ssh with the generated key: {result.stdout!r} {result.stderr!r}")
    # Ask for password authentication only: the server must not offer it.
    refused = subprocess.run(
        [
            "ssh",
            "-p",
            str(vm.ports[SSH_PORT]),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "BatchMode=yes",
            "-o",
            "NumberOfPasswordPrompts=0",
            "kiln@127.0.0.1",
            "true",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    methods = refused.stderr.strip().splitlines()[-1:] or [""]
    if refused.returncode == 0 or "password" in methods[0] or "keyboard" in methods[0]:
        raise CheckFailed(f"password login is offered: {refused.stderr.strip()}")
    return f"key login works; password refused ({methods[0]})"


CHECKS: dict[str, Callable[..., str]] = {
    "ingest": check_ingest,
    "monitor": check_monitor,
    "ssh": check_ssh,
}


def check_status(vm: VM, image: dict, instance, credentials) -> str:
    """The readiness status, over HTTP as on the serial console."""
    answer = requests.get(url(vm, image["status_port"], "/"), timeout=30)
    status = answer.json()
    if answer.status_code != 200 or not status.get("ready"):
        raise CheckFailed(f"status over HTTP: {answer.status_code} {answer.text[:300]}")
    return status["line"]


CHECKS["status"] = check_status


def run_checks(vm: VM, image: dict, tests: list[dict], credentials) -> list[Result]:
    results = []
    for test in [{"check": "status", "instance": None}, *tests]:
        if test["check"] not in CHECKS:
            continue  # fresh-credentials needs a second boot; see boottest.py
        started = time.monotonic()
        try:
            detail = CHECKS[test["check"]](vm, image, test["instance"], credentials)
            ok = True
        except (CheckFailed, requests.RequestException, OSError) as error:
            detail, ok = str(error), False
        except Exception as error:  # a check's own failure is reported, not raised
            detail, ok = f"{type(error).__name__}: {error}", False
        name = test["check"] + (f" ({test['instance']})" if test["instance"] else "")
        results.append(Result(name, ok, detail, time.monotonic() - started))
    return results
