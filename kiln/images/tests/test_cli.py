"""`kiln image` as a user meets it: help, validate, and errors that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli import main

pytestmark = pytest.mark.unit
APPLIANCE = str(Path(__file__).resolve().parents[3] / "images" / "appliance.yaml")


def run(*args: str):
    return CliRunner().invoke(main, ["image", *args])


def test_help_names_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("validate", "build", "test", "boot", "push", "pull", "export-ec2"):
        assert command in result.output
    assert "guest" not in result.output  # run by the image's own units, not by users


def test_validate_the_appliance():
    result = run("validate", APPLIANCE)
    assert result.exit_code == 0, result.output
    assert "ok: image 'appliance', Debian bookworm amd64" in result.output


def test_validate_reports_file_key_and_allowed(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsource: {release: bookworm}\noutputs: [vmdk]\n")
    result = run("validate", str(bad))
    assert result.exit_code == 1
    assert "bad.yaml: outputs[0]: 'vmdk' is not allowed; allowed: qcow2, raw" in result.output


def test_var_overrides_and_bad_var(tmp_path):
    assert run("validate", APPLIANCE, "--var", "wendelin_port=9000").exit_code == 0
    result = run("validate", APPLIANCE, "--var", "colour=red")
    assert result.exit_code == 1 and "--var colour: not declared" in result.output
    assert "write NAME=VALUE" in run("validate", APPLIANCE, "--var", "oops").output


def test_build_with_cache_needs_a_trusted_key():
    result = run("build", APPLIANCE, "--cache", "http://127.0.0.1:1")
    assert result.exit_code == 1 and "--cache needs --trust KEY" in result.output
