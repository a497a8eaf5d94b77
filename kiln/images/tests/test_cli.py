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
    for command in ("validate", "build", "test", "boot", "run", "push", "pull", "export-ec2"):
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


# --- The cache flags: the cache's one configuration model, as `kiln software build` reads it --

NO_CACHE_ENV = {"KILN_CACHE_URL": None, "KILN_CACHE_USER": None, "KILN_CACHE_PASSWORD": None}


@pytest.fixture
def keys(tmp_path):
    from kiln.shacache.keys import generate_ed25519_key, write_secret_file

    key = generate_ed25519_key("builder1")
    write_secret_file(tmp_path / "builder1.key", key.secret_text)
    (tmp_path / "builder1.pub").write_text(key.public_text + "\n")
    return tmp_path / "builder1.key", tmp_path / "builder1.pub", key.public_text


@pytest.fixture
def baked(monkeypatch):
    """What `kiln image build` hands the bake.  The bake itself (root, diskimage-builder,
    minutes) is replaced here: these tests are about parsing the command line, and the slow
    tier (tests/test_images.py) bakes for real."""
    from kiln.images import bake

    seen = []

    def stop(template, output_dir, cache, progress):
        seen.append(cache)
        raise bake.BakeError("stopped by the test after parsing")

    monkeypatch.setattr(bake, "bake", stop)
    return seen


def build(*args: str, env: dict | None = None):
    return CliRunner().invoke(
        main, ["image", "build", APPLIANCE, *args], env={**NO_CACHE_ENV, **(env or {})}
    )


def test_build_reads_cache_trust_signing_key_and_credentials_from_the_environment(baked, keys):
    secret, public, public_text = keys
    env = {"KILN_CACHE_USER": "uploader", "KILN_CACHE_PASSWORD": "s3cret"}
    result = build(
        "--cache", "http://127.0.0.1:5080", "--trust", str(public), "--sign-with", str(secret),
        env=env,
    )  # fmt: skip
    assert "stopped by the test" in result.output, result.output
    (config,) = baked
    assert config.download_cache_url == "http://127.0.0.1:5080/shacache"
    assert config.upload_dir_url == "http://uploader:s3cret@127.0.0.1:5080/shadir"
    assert config.trusted_keys == (public_text,)
    assert config.signing_key_file == secret
    assert "s3cret" not in result.output and "warning" not in result.output


def test_build_refuses_a_password_in_the_cache_flag(baked, keys):
    result = build("--cache", "http://uploader:s3cret@127.0.0.1:5080", "--trust", str(keys[1]))
    assert result.exit_code == 2 and not baked
    assert "visible to every user of the machine (ps)" in result.output
    assert "s3cret" not in result.output


def test_build_reads_a_networkcache_file_and_the_environment_url(baked, keys, tmp_path):
    secret, public, public_text = keys
    config_file = tmp_path / "slapos.cfg"
    config_file.write_text(
        "[networkcache]\n"
        "download-cache-url = http://cache.example:5080/shacache\n"
        "download-dir-url = http://cache.example:5080/shadir\n"
        "upload-cache-url = http://up:pw@cache.example:5080/shacache\n"
        "upload-dir-url = http://up:pw@cache.example:5080/shadir\n"
        f"signing-key-file = {secret}\n"
        f"trusted-keys = {public_text}\n"
    )
    build("--config", str(config_file))
    assert baked[-1].upload_cache_url == "http://up:pw@cache.example:5080/shacache"
    assert baked[-1].signing_key_file == secret and baked[-1].trusted_keys == (public_text,)
    build("--trust", str(public), env={"KILN_CACHE_URL": "http://10.0.0.5:5080"})
    assert baked[-1].download_dir_url == "http://10.0.0.5:5080/shadir"
    assert baked[-1].upload_cache_url == "http://10.0.0.5:5080/shacache"  # no credentials
    build()
    assert baked[-1] is None  # no cache: the releases are built from source


def test_build_warns_when_it_cannot_upload(baked, keys):
    secret, public, _ = keys
    result = build(
        "--cache", "http://127.0.0.1:5080", "--trust", str(public), "--sign-with", str(secret)
    )
    assert "warning: --sign-with without upload credentials" in result.output


@pytest.mark.parametrize("command", ["push", "pull"])
def test_push_and_pull_refuse_a_password_in_the_cache_flag(command, tmp_path):
    target = [str(tmp_path / "x.qcow2"), "--key", "x"] if command == "push" else ["x"]
    (tmp_path / "x.qcow2").write_bytes(b"disk")
    result = CliRunner().invoke(
        main,
        ["image", command, *target, "--cache", "http://u:s3cret@127.0.0.1:1", "--trust", "a:b"],
        env=NO_CACHE_ENV,
    )
    assert result.exit_code == 2 and "visible to every user" in result.output


def test_push_without_credentials_says_where_they_go(keys, tmp_path):
    secret, public, _ = keys
    (tmp_path / "x.qcow2").write_bytes(b"disk")
    args = ["push", str(tmp_path / "x.qcow2"), "--key", "x", "--cache", "http://127.0.0.1:1"]
    result = run(*args, "--trust", str(public), "--sign-with", str(secret))
    assert result.exit_code == 1
    assert "$KILN_CACHE_USER and $KILN_CACHE_PASSWORD" in result.output
    result = run("pull", "x", "--cache", "http://127.0.0.1:1")
    assert result.exit_code == 1 and "--trust KEY is required" in result.output
