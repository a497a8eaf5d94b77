"""The appliance's fluentd configuration: what it says, and the real fluentd accepts it."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from kiln.monitor.configure import ConfigureError, check_with_fluentd
from kiln.monitor.fluentd_config import Paths, appliance_config, quote, remote_agent_snippet
from kiln.monitor.parameters import parse
from kiln.monitor.tests.test_parameters import DEFAULTS

PARAMETERS = parse({**DEFAULTS, "hostname": "box"})


def config(tmp_path: Path, **changes: object) -> str:
    return appliance_config(
        replace(PARAMETERS, **changes), Paths(tmp_path), "KEY-abc", "WKEY-def", "monitor"
    )


@pytest.mark.unit
def test_forward_in_acknowledged_out_with_a_durable_endless_buffer(tmp_path: Path) -> None:
    text = config(tmp_path)
    assert "@type forward\n  @id remote_agents\n  bind '127.0.0.1'\n  port 24225" in text
    assert "shared_key 'KEY-abc'" in text and "shared_key 'WKEY-def'" in text
    assert "require_ack_response true" in text
    assert "@type file" in text and f"path '{tmp_path}/srv/fluentd/buffer/wendelin'" in text
    assert "retry_forever true" in text and "flush_at_shutdown true" in text
    assert "port 24226" in text and "<transport tls>" not in text
    for service in ("wendelin", "monitor", "shacache"):
        assert f"tag log.box.monitor.{service}" in text
        assert f"pos_file '{tmp_path}/srv/fluentd/pos/{service}.log.pos'" in text
    # fluentd's own events never reach <match **>.
    assert text.index("<label @FLUENT_LOG>") < text.index("<match **>")


@pytest.mark.unit
def test_tls_when_certificates_are_given(tmp_path: Path) -> None:
    text = config(tmp_path, tls_cert=Path("/c.pem"), tls_key=Path("/k.pem"))
    assert "<transport tls>\n    cert_path '/c.pem'\n    private_key_path '/k.pem'" in text
    snippet = remote_agent_snippet(replace(PARAMETERS, tls_cert=Path("/c.pem")), "K")
    assert "transport tls" in snippet


@pytest.mark.unit
def test_values_cannot_inject_ruby_or_break_quotes() -> None:
    assert quote("a'b") == r"'a\'b'"
    assert quote("#{`id`}") == "'#{`id`}'"  # single quotes: fluentd does not interpolate
    assert quote("c:\\x") == r"'c:\\x'"


@pytest.mark.unit
def test_the_remote_snippet_names_host_port_and_key() -> None:
    snippet = remote_agent_snippet(PARAMETERS, "KEY-abc")
    assert "host 127.0.0.1\n    port 24225" in snippet
    assert "shared_key 'KEY-abc'" in snippet and "require_ack_response true" in snippet
    assert 'self_hostname "#{Socket.gethostname}"' in snippet


@pytest.mark.integration
def test_the_real_fluentd_accepts_the_configuration(fluentd_program: Path, tmp_path: Path) -> None:
    path = tmp_path / "fluent.conf"
    path.write_text(config(tmp_path))
    check_with_fluentd(fluentd_program, path)
    snippet = tmp_path / "snippet.conf"
    snippet.write_text(remote_agent_snippet(PARAMETERS, "KEY-abc"))
    check_with_fluentd(fluentd_program, snippet)


@pytest.mark.integration
def test_fluentd_refusal_names_the_parameter(fluentd_program: Path, tmp_path: Path) -> None:
    path = tmp_path / "fluent.conf"
    # fluentd reads numbers leniently ("soon" is 0 s): kiln checks those itself; a boolean
    # it cannot read is fluentd's own refusal.
    path.write_text(config(tmp_path).replace("retry_forever true", "retry_forever maybe"))
    with pytest.raises(ConfigureError, match="'retry_forever' parameter"):
        check_with_fluentd(fluentd_program, path)


@pytest.mark.integration
def test_the_component_wrapper_reports_its_version(fluentd_program: Path) -> None:
    version = subprocess.run([fluentd_program, "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == "fluentd 1.16.11"
