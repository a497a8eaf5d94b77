"""`kiln wendelin ...` through the umbrella command, as an operator types it."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def kiln(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln", "wendelin", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_policy_add_prints_generated_credentials_once(tmp_path) -> None:
    first = kiln("policy", "add", "--root", str(tmp_path), "turbines", "--json")
    assert first.returncode == 0, first.stderr
    credentials = json.loads(first.stdout)
    assert credentials["password"] and credentials["shared_key"]
    again = kiln("policy", "add", "--root", str(tmp_path), "turbines")
    assert again.returncode != 0 and "already exists" in again.stderr
    listing = kiln("policy", "list", "--root", str(tmp_path)).stdout
    assert "turbines" in listing and credentials["password"] not in listing


def test_every_command_explains_itself() -> None:
    for command in ([], ["serve"], ["policy", "add"], ["reader", "add"], ["stream", "list"]):
        result = kiln(*command, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout and len(result.stdout.splitlines()) > 5


def test_bad_names_are_refused_with_the_rule(tmp_path) -> None:
    result = kiln("policy", "add", "--root", str(tmp_path), "../evil")
    assert result.returncode != 0
    assert "cannot name a policy" in result.stderr
