"""The monitor instance's parameters: one typed model, one parser, checked at `instance up`.

The defaults live in the instance profile (software/monitor/instance.cfg.in), which writes
every value to ``etc/monitor-parameters.cfg``; the parameters a user gave are in the
instance's generated ``kiln-instance.cfg``.  A value that fluentd or the monitor could not
use, or a parameter name nobody reads (a typo), is an error that names it.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

PARAMETERS_FILE = Path("etc") / "monitor-parameters.cfg"
SECTION = "parameters"


class ParameterError(ValueError):
    """A parameter is missing or malformed; the message names it and says what to write."""


@dataclass(frozen=True)
class MonitorParameters:
    host: str  # where the instance's own HTTP services listen (page, Wendelin, cache)
    forward_bind: str  # where fluentd's in_forward listens for remote agents
    forward_port: int
    advertise_host: str  # the host remote agents connect to (printed in the snippet)
    tls_cert: Path | None
    tls_key: Path | None
    wendelin_http_port: int
    wendelin_forward_port: int
    monitor_port: int
    cache_port: int
    sample_interval: float
    promise_interval: float
    flush_interval: float
    hostname: str  # the host part of the monitor's tags: monitor.<hostname>.system
    watch: tuple[str, ...]  # globs of instance directories whose programs and checks are watched

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


NAMES = (
    "host",
    "forward-bind",
    "forward-port",
    "advertise-host",
    "tls-cert",
    "tls-key",
    "wendelin-http-port",
    "wendelin-forward-port",
    "monitor-port",
    "cache-port",
    "sample-interval",
    "promise-interval",
    "flush-interval",
    "hostname",
    "watch",
)

# A tag part: what a Wendelin stream name allows, without dots (they separate tag parts).
_TAG_PART = re.compile(r"[^A-Za-z0-9_-]+")


def tag_part(text: str) -> str:
    """``my.host`` -> ``my_host``: a name fit for one part of a fluentd tag / stream name."""
    return _TAG_PART.sub("_", text).strip("_") or "unnamed"


def _port(name: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ParameterError(f"parameter {name}={value!r}: write a TCP port from 1 to 65535")
    return int(value)


def _seconds(name: str, value: str, low: float, high: float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not low <= seconds <= high:  # also false for nan
        raise ParameterError(
            f"parameter {name}={value!r}: write a number of seconds from {low:g} to {high:g}"
        )
    return seconds


def _address(name: str, value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ParameterError(
            f"parameter {name}={value!r}: write an IP address to listen on "
            "(127.0.0.1, or 0.0.0.0 for every interface)"
        ) from None
    return value


def _hostname(name: str, value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", value):
        raise ParameterError(f"parameter {name}={value!r}: write a host name or an IP address")
    return value


def _file(name: str, value: str) -> Path | None:
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ParameterError(f"parameter {name}={value!r}: no such file (give a PEM file path)")
    return path.resolve()


def parse(values: dict[str, str]) -> MonitorParameters:
    """Check every value; the first bad one raises ParameterError naming it."""
    missing = [name for name in NAMES if name not in values]
    if missing:
        raise ParameterError(f"parameters missing from the profile: {', '.join(missing)}")
    v = {name: values[name].strip() for name in NAMES}
    tls_cert, tls_key = _file("tls-cert", v["tls-cert"]), _file("tls-key", v["tls-key"])
    if (tls_cert is None) != (tls_key is None):
        raise ParameterError("parameters tls-cert and tls-key: give both (PEM files) or neither")
    forward_bind = _address("forward-bind", v["forward-bind"])
    advertise = v["advertise-host"] or (
        socket.getfqdn() if forward_bind in ("0.0.0.0", "::") else forward_bind
    )
    return MonitorParameters(
        host=_address("host", v["host"]),
        forward_bind=forward_bind,
        forward_port=_port("forward-port", v["forward-port"]),
        advertise_host=_hostname("advertise-host", advertise),
        tls_cert=tls_cert,
        tls_key=tls_key,
        wendelin_http_port=_port("wendelin-http-port", v["wendelin-http-port"]),
        wendelin_forward_port=_port("wendelin-forward-port", v["wendelin-forward-port"]),
        monitor_port=_port("monitor-port", v["monitor-port"]),
        cache_port=_port("cache-port", v["cache-port"]),
        sample_interval=_seconds("sample-interval", v["sample-interval"], 1, 3600),
        promise_interval=_seconds("promise-interval", v["promise-interval"], 1, 86400),
        flush_interval=_seconds("flush-interval", v["flush-interval"], 0.1, 600),
        hostname=tag_part(v["hostname"] or socket.gethostname()),
        watch=tuple(v["watch"].split()),
    )


def _read_section(path: Path, section: str) -> dict[str, str]:
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep names' case
    parser.read(path)
    return dict(parser[section]) if parser.has_section(section) else {}


def load(instance_root: Path) -> MonitorParameters:
    """The parameters of the instance in ``instance_root``, checked."""
    from kiln.software.instance import GENERATED_PROFILE

    given = _read_section(instance_root / GENERATED_PROFILE, "instance-parameter")
    unknown = sorted(set(given) - set(NAMES))
    if unknown:
        raise ParameterError(
            f"unknown parameter(s): {', '.join(unknown)}. The monitor instance takes: "
            + ", ".join(NAMES)
        )
    return parse(_read_section(instance_root / PARAMETERS_FILE, SECTION))
