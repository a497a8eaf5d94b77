"""`kiln software` / `kiln instance`: help, and clear errors naming the bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.buildout.recipes import render_template
from kiln.cli import main
from kiln.shacache.config import parse_cache_config
from kiln.software.build import build_networkcache, resolve_release

pytestmark = pytest.mark.unit


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_groups_are_mounted_with_help() -> None:
    assert "seed-sources" in run("software", "--help").output
    for command in ("up", "down", "status"):
        assert command in run("instance", "--help").output


def test_unknown_release_lists_the_known_ones() -> None:
    result = run("software", "build", "software/nope")
    assert result.exit_code != 0
    assert "no software release at 'software/nope'" in result.output
    assert "wendelin" in result.output


def test_resolve_release_accepts_short_names() -> None:
    assert resolve_release("wendelin") == resolve_release("software/wendelin")


def test_bad_set_option_is_named() -> None:
    result = run("software", "build", "software/kvm", "--set", "nonsense")
    assert result.exit_code != 0
    assert "SECTION:OPTION=VALUE" in result.output


def test_seed_sources_requires_something_and_a_key() -> None:
    assert "nothing to seed" in run("software", "seed-sources").output
    result = run("software", "seed-sources", "--apt", "libzstd=1", "--cache", "http://127.0.0.1:9")
    assert "--sign-with" in result.output


def test_status_of_a_directory_that_is_no_instance(tmp_path: Path) -> None:
    result = run("instance", "status", "--root", str(tmp_path))
    assert result.exit_code != 0
    assert "is not an instance" in result.output


def test_credentials_stay_out_of_download_urls(tmp_path: Path) -> None:
    key = tmp_path / "builder.key"
    key.write_text("builder:secret\n")
    url = "http://alice:s3cret@127.0.0.1:5080"
    signed = parse_cache_config(flags={"url": url, "signing_key_file": key})
    lines = build_networkcache(signed)
    assert "download-cache-url = http://127.0.0.1:5080/shacache" in lines
    assert "upload-cache-url = http://alice:s3cret@127.0.0.1:5080/shacache" in lines
    # Without a signing key nothing is uploaded, so no credentials are written at all.
    unsigned = build_networkcache(parse_cache_config(flags={"url": url}))
    assert not any(line.startswith("upload-cache-url") for line in unsigned)
    assert "s3cret" not in str(unsigned)


def test_render_template_names_unknown_placeholders() -> None:
    assert render_template("a {{ x }} b", {"x": "1"}, "t") == "a 1 b"
    with pytest.raises(Exception, match="y"):
        render_template("{{ y }}", {}, "t")


def test_up_help_lists_every_release_parameter_with_its_default() -> None:
    output = run("instance", "up", "--help").output
    assert "wendelin: host=127.0.0.1, http-port=8420, forward-port=24224" in output
    assert "kvm: image (no default)" in output
    assert "monitor: host=127.0.0.1, forward-bind=127.0.0.1, forward-port=24225" in output


def test_unknown_param_is_an_error_naming_the_known_ones() -> None:
    result = run("instance", "up", "software/wendelin", "--param", "http_port=1")
    assert result.exit_code != 0
    assert "unknown --param http_port for wendelin" in result.output
    assert "host, http-port, forward-port" in result.output


@pytest.mark.parametrize("command", ["status", "down"])
def test_status_and_down_accept_the_release_like_up(command: str) -> None:
    result = run("instance", command, "software/wendelin")
    # Whatever its state, the release's default instance is the one looked at.
    assert str(Path("instance") / "wendelin") in result.output
    bad = run("instance", command, "software/nope")
    assert bad.exit_code != 0
    assert "no software release at 'software/nope'" in bad.output
