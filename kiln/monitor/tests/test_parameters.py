"""The monitor instance's parameters: every bad value is an error that names it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kiln.monitor.parameters import NAMES, ParameterError, load, parse, tag_part

pytestmark = pytest.mark.unit

DEFAULTS = {
    "host": "127.0.0.1",
    "forward-bind": "127.0.0.1",
    "forward-port": "24225",
    "advertise-host": "",
    "tls-cert": "",
    "tls-key": "",
    "wendelin-http-port": "8421",
    "wendelin-forward-port": "24226",
    "monitor-port": "8422",
    "cache-port": "8080",
    "sample-interval": "10",
    "promise-interval": "60",
    "flush-interval": "1",
    "hostname": "",
    "watch": "",
}


def test_defaults_parse() -> None:
    parameters = parse(DEFAULTS)
    assert parameters.forward_port == 24225 and parameters.sample_interval == 10
    assert parameters.advertise_host == "127.0.0.1" and not parameters.tls
    assert "." not in parameters.hostname and parameters.watch == ()
    assert set(DEFAULTS) == set(NAMES)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("forward-port", "0", "forward-port='0': write a TCP port"),
        ("monitor-port", "http", "monitor-port='http'"),
        ("flush-interval", "1s", "flush-interval='1s': write a number of seconds"),
        ("sample-interval", "nan", "sample-interval='nan'"),
        ("promise-interval", "0", "promise-interval='0'"),
        ("forward-bind", "localhost", "forward-bind='localhost': write an IP address"),
        ("tls-cert", "/nonexistent.pem", "tls-cert='/nonexistent.pem': no such file"),
        ("advertise-host", "a b", "advertise-host='a b'"),
    ],
)
def test_a_bad_value_names_its_parameter(name: str, value: str, message: str) -> None:
    with pytest.raises(ParameterError, match=re.escape(message)):
        parse({**DEFAULTS, name: value})


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ParameterError, match="tls-cert and tls-key"):
        parse({**DEFAULTS, "tls-cert": str(cert)})
    both = parse({**DEFAULTS, "tls-cert": str(cert), "tls-key": str(cert)})
    assert both.tls


def test_listening_everywhere_advertises_the_machine_name() -> None:
    parameters = parse({**DEFAULTS, "forward-bind": "0.0.0.0"})
    assert parameters.advertise_host not in ("0.0.0.0", "")


def test_unknown_parameter_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "monitor-parameters.cfg").write_text(
        "[parameters]\n" + "".join(f"{k} = {v}\n" for k, v in DEFAULTS.items())
    )
    (tmp_path / "kiln-instance.cfg").write_text("[instance-parameter]\nfoward-port = 1\n")
    with pytest.raises(ParameterError, match=r"unknown parameter.*foward-port"):
        load(tmp_path)
    (tmp_path / "kiln-instance.cfg").write_text("[instance-parameter]\nforward-port = 1\n")
    assert load(tmp_path).forward_port == 24225  # the profile's resolved value is used


def test_tag_parts_are_stream_name_safe() -> None:
    assert tag_part("my.host name") == "my_host_name"
    assert tag_part("...") == "unnamed"
