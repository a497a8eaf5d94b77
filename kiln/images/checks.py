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
    return next(iter(found["ports"].values()))


def guest_ports(image: dict) -> list[int]:
    ports = {p for i in image["instances"] for p in i["ports"].values()}
    return sorted(ports | {image["status_port"]})


def url(vm: VM, guest_port: int, path: str = "/") -> str:
    return f"http://127.0.0.1:{vm.ports[guest_port]}{path}"


def wendelin_login(credentials: dict[str, dict[str, str]], instance: str) -> tuple[str, str]:
    for text in credentials.get(instance, {}).values():
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if "user" in data and "password" in data:
            return data["user"], data["password"]
    raise CheckFailed(f"no ingestion policy credentials generated in instance {instance!r}")


def check_ingest(vm: VM, image: dict, instance: str, credentials) -> str:
    """HTTP ingest answers 204, and a resent chunk is stored once."""
    port = main_port(image, instance)
    auth = wendelin_login(credentials, instance)
    tag = f"image.test{secrets.token_hex(3)}"
    body = json.dumps({"check": "kiln image test", "value": 1}).encode()
    headers = {"Content-Type": "application/json"}
    # An explicit time makes the resent chunk byte-identical (fluentd resends the same bytes).
    target = url(vm, port, f"/tags/{tag}?time={int(time.time())}")
    first = requests.post(target, data=body, headers=headers, auth=auth, timeout=30)
    if first.status_code != 204:
        raise CheckFailed(f"POST {target}: {first.status_code} {first.text[:200]}, expected 204")
    again = requests.post(target, data=body, headers=headers, auth=auth, timeout=30)
    if again.status_code != 204:
        raise CheckFailed(f"resent chunk: {again.status_code} {again.text[:200]}, expected 204")
    streams = requests.get(url(vm, port, "/api/streams"), auth=auth, timeout=30)
    streams.raise_for_status()
    listing = streams.json()
    items = listing.get("streams", listing) if isinstance(listing, dict) else listing
    entries = [s.get("entries") for s in items if isinstance(s, dict) and tag in s.get("name", "")]
    if entries != [1]:
        raise CheckFailed(f"a resent chunk must be stored once; stream entries: {entries}")
    duplicate = again.headers.get("X-Wendelin-Duplicate", "?")
    return f"204, resent chunk stored once (X-Wendelin-Duplicate: {duplicate})"


def check_monitor(vm: VM, image: dict, instance: str, credentials) -> str:
    port = main_port(image, instance)
    answer = requests.get(url(vm, port, "/health"), timeout=30)
    if answer.status_code != 200:
        raise CheckFailed(f"monitor /health: {answer.status_code}")
    return "monitor /health answers 200"


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
