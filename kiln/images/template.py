"""The image template: packer-style YAML, one typed model, one loader.

A template names what a bake needs (the Debian source, packages, the releases to install and
the instances to start at boot, first-boot settings, outputs and boot tests).  Strings may use
``{{ name }}`` for a variable; a variable's value comes from, in order: ``--var name=value``,
the environment (``KILN_VAR_name``), the template's ``variables`` default.  Every error names
the file, the key and what is allowed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

OUTPUTS = ("qcow2", "raw")
CHECKS = ("ingest", "monitor", "ssh", "fresh-credentials")
ARCHITECTURES = ("amd64",)  # the only one booted and tested here
VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
NAME = re.compile(r"[a-z][a-z0-9-]{0,30}\Z")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z")
ENV_PREFIX = "KILN_VAR_"


class TemplateError(Exception):
    """A template that cannot be used; the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class Source:
    release: str
    architecture: str
    mirror: str | None  # None: read from this machine's apt configuration at bake time
    security_mirror: str | None


@dataclass(frozen=True)
class Instance:
    name: str
    release: str  # software/NAME
    parameters: dict[str, str]
    ports: dict[str, int]  # what the guest listens on, forwarded to the host by `kiln image test`

    @property
    def main_port(self) -> int:
        return next(iter(self.ports.values()))


@dataclass(frozen=True)
class FirstBoot:
    hostname: str
    status_port: int  # the readiness status over HTTP
    ready_timeout: int  # seconds the guest waits for its instances before it reports failure


@dataclass(frozen=True)
class Check:
    check: str
    instance: str | None


@dataclass(frozen=True)
class Template:
    path: Path
    name: str
    description: str
    variables: dict[str, str]
    source: Source
    packages: list[str]
    releases: list[str]
    instances: list[Instance]
    firstboot: FirstBoot
    outputs: list[str]
    disk_size_mb: int
    ec2: bool
    tests: list[Check]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def digest(self) -> str:
        """sha256 of the resolved template (variables applied), for the manifest."""
        return hashlib.sha256(yaml.safe_dump(self.raw, sort_keys=True).encode()).hexdigest()

    def instance(self, name: str) -> Instance:
        return next(i for i in self.instances if i.name == name)

    def instances_of(self, release: str) -> list[Instance]:
        return [i for i in self.instances if i.release == release]


class _Reader:
    """Typed access to one mapping of the template, with errors that name the key."""

    def __init__(self, path: Path, data: Any, key: str) -> None:
        self.path, self.key = path, key
        if not isinstance(data, dict):
            self.fail(key, f"expected a mapping, got {type(data).__name__}")
        self.data: dict[str, Any] = data

    def fail(self, key: str, problem: str) -> None:
        raise TemplateError(f"{self.path}: {key or '(top level)'}: {problem}")

    def where(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def only(self, allowed: tuple[str, ...]) -> None:
        for name in self.data:
            if name not in allowed:
                self.fail(self.where(str(name)), f"unknown key; allowed: {', '.join(allowed)}")

    def get(self, name: str, kind: type, default: Any = ..., required: bool = False) -> Any:
        if name not in self.data:
            if required or default is ...:
                self.fail(self.where(name), "missing (required)")
            return default
        value = self.data[name]
        if kind is int and isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if kind is bool and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"  # from a variable: `ec2: "{{ ec2 }}"`
        if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(self.where(name), f"expected {kind.__name__}, got {value!r}")
        return value

    def child(self, name: str, default: Any = ...) -> _Reader:
        return _Reader(self.path, self.get(name, dict, default), self.where(name))

    def strings(self, name: str, pattern: re.Pattern | None = None, allowed=None) -> list[str]:
        values = self.get(name, list, [])
        result = []
        for index, value in enumerate(values):
            where = f"{self.where(name)}[{index}]"
            if not isinstance(value, str | int) or isinstance(value, bool):
                self.fail(where, f"expected a string, got {value!r}")
            value = str(value)
            if allowed is not None and value not in allowed:
                self.fail(where, f"{value!r} is not allowed; allowed: {', '.join(allowed)}")
            if pattern is not None and not pattern.match(value):
                self.fail(where, f"{value!r} is not a valid name")
            result.append(value)
        return result


def _substitute(value: Any, variables: Mapping[str, str], path: Path, key: str) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            name = match[1]
            if name not in variables:
                known = ", ".join(sorted(variables)) or "none"
                raise TemplateError(
                    f"{path}: {key}: unknown variable {{{{ {name} }}}}; "
                    f"declare it under `variables` (declared: {known})"
                )
            return variables[name]

        return VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [_substitute(v, variables, path, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: _substitute(v, variables, path, f"{key}.{k}" if key else str(k))
            for k, v in value.items()
        }
    return value


def resolve_variables(
    path: Path,
    declared: Mapping[str, Any],
    overrides: Mapping[str, str],
    environ: Mapping[str, str],
) -> dict[str, str]:
    for name in overrides:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise TemplateError(f"{path}: --var {name}: not declared under `variables` ({known})")
    result = {}
    for name, default in declared.items():
        if not isinstance(name, str) or not re.match(r"[A-Za-z_][A-Za-z0-9_]*\Z", name):
            raise TemplateError(f"{path}: variables.{name}: names are letters, digits and _")
        if name in overrides:
            result[name] = overrides[name]
        elif ENV_PREFIX + name in environ:
            result[name] = environ[ENV_PREFIX + name]
        elif default is None:
            raise TemplateError(
                f"{path}: variables.{name}: no default; give --var {name}=VALUE "
                f"or ${ENV_PREFIX}{name}"
            )
        else:
            result[name] = str(default)
    return result


def _port(reader: _Reader, key: str, value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        reader.fail(key, f"expected a TCP port (1-65535), got {value!r}")
    return value


def _instances(top: _Reader, releases: list[str]) -> list[Instance]:
    result = []
    for index, item in enumerate(top.get("instances", list, [])):
        reader = _Reader(top.path, item, f"instances[{index}]")
        reader.only(("name", "release", "parameters", "ports"))
        name = reader.get("name", str, required=True)
        if not NAME.match(name):
            reader.fail(reader.where("name"), f"{name!r}: lowercase letters, digits and -")
        release = reader.get("release", str, required=True)
        if release not in releases:
            reader.fail(
                reader.where("release"),
                f"{release!r} is not installed; allowed: the `releases` ({', '.join(releases)})",
            )
        parameters = {
            str(k): str(v) for k, v in reader.get("parameters", dict, {}).items() if v is not None
        }
        ports_reader = reader.child("ports")
        ports = {
            str(k): _port(reader, f"{ports_reader.where(str(k))}", v)
            for k, v in ports_reader.data.items()
        }
        if not ports:
            reader.fail(reader.where("ports"), "name at least one port (the first is its main)")
        result.append(Instance(name, release, parameters, ports))
    names = [i.name for i in result]
    for name in names:
        if names.count(name) > 1:
            top.fail("instances", f"two instances are named {name!r}")
    return result


def parse_template(
    path: Path,
    data: Any,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Template:
    top = _Reader(path, data, "")
    top.only(
        (
            "name",
            "description",
            "variables",
            "source",
            "packages",
            "releases",
            "instances",
            "firstboot",
            "outputs",
            "disk_size_mb",
            "ec2",
            "tests",
        )
    )
    declared = top.get("variables", dict, {})
    variables = resolve_variables(path, declared, overrides or {}, environ or os.environ)
    resolved = {k: v for k, v in data.items() if k != "variables"}
    resolved = _substitute(resolved, variables, path, "")
    top = _Reader(path, resolved, "")

    name = top.get("name", str, required=True)
    if not NAME.match(name):
        top.fail("name", f"{name!r}: lowercase letters, digits and - (it names the image files)")
    source = top.child("source")
    source.only(("release", "architecture", "mirror", "security_mirror"))
    architecture = source.get("architecture", str, "amd64")
    if architecture not in ARCHITECTURES:
        source.fail("source.architecture", f"{architecture!r}; allowed: {', '.join(ARCHITECTURES)}")
    release = source.get("release", str, required=True)
    if not re.match(r"[a-z]+\Z", release):
        source.fail("source.release", f"{release!r}: a Debian code name such as bookworm")
    mirrors = [source.get(k, str, None) or None for k in ("mirror", "security_mirror")]
    for key, mirror in zip(("mirror", "security_mirror"), mirrors, strict=True):
        if mirror and not re.match(r"(https?|file)://", mirror):
            source.fail(f"source.{key}", f"{mirror!r}: an http(s):// or file:// URL")

    releases = top.strings("releases", re.compile(r"software/[a-z][a-z0-9-]*\Z"))
    firstboot = top.child("firstboot", {})
    firstboot.only(("hostname", "status_port", "ready_timeout"))
    hostname = firstboot.get("hostname", str, name)
    status_port = _port(firstboot, "firstboot.status_port", firstboot.get("status_port", int, 8000))
    ready_timeout = firstboot.get("ready_timeout", int, 600)

    instances = _instances(top, releases)
    names = {i.name for i in instances}
    tests = []
    for index, item in enumerate(top.get("tests", list, [])):
        reader = _Reader(path, {"check": item} if isinstance(item, str) else item, "")
        reader.key = f"tests[{index}]"
        reader.only(("check", "instance"))
        check = reader.get("check", str, required=True)
        if check not in CHECKS:
            reader.fail(reader.where("check"), f"{check!r}; allowed: {', '.join(CHECKS)}")
        instance = reader.get("instance", str, None)
        if check in ("ingest", "monitor") and instance not in names:
            reader.fail(
                reader.where("instance"),
                f"{instance!r}: a `{check}` check names one of the instances "
                f"({', '.join(sorted(names)) or 'none declared'})",
            )
        tests.append(Check(check, instance))

    outputs = top.strings("outputs", allowed=OUTPUTS) or ["qcow2"]
    disk_size_mb = top.get("disk_size_mb", int, 0)
    if disk_size_mb and disk_size_mb < 1024:
        top.fail("disk_size_mb", f"{disk_size_mb}: at least 1024, or 0 to fit the content")
    return Template(
        path=path,
        name=name,
        description=top.get("description", str, ""),
        variables=variables,
        source=Source(release, architecture, *mirrors),
        packages=top.strings("packages", PACKAGE),
        releases=releases,
        instances=instances,
        firstboot=FirstBoot(hostname, status_port, ready_timeout),
        outputs=outputs,
        disk_size_mb=disk_size_mb,
        ec2=top.get("ec2", bool, False),
        tests=tests,
        raw=resolved,
    )


def load_template(
    path: str | Path,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Template:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise TemplateError(f"{path}: cannot read: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise TemplateError(f"{path}: not valid YAML: {error}") from None
    return parse_template(path, data if data is not None else {}, overrides, environ)
