"""zc.buildout recipes of the software releases (entry points `kiln:<name>`).

Each recipe is small and does one thing; the binary cache extension caches them like any
other part, so their options say everything their output depends on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import zc.buildout

Options = Any  # zc.buildout.buildout.Options: a mapping of str -> str


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


class SystemPython:
    """The Python the releases run on: the machine's, found by version, never compiled.

    Options: ``version`` (e.g. 3.11).  Sets ``executable`` (the interpreter path) and
    ``interpreter-id`` (implementation, full version and a digest of the real path), which
    puts the interpreter into the signature of every part built with it, without writing
    its install path there.
    """

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        version = options["version"].strip()
        candidates = [options.get("executable", "").strip(), f"python{version}"]
        for candidate in filter(None, candidates):
            found = shutil.which(candidate)
            if found:
                break
        else:
            raise zc.buildout.UserError(
                f"[{name}] no python{version} on PATH. The releases run on the machine's "
                f"Python {version}: install it (Debian: apt-get install python{version} "
                f"python{version}-venv) or set {name}:executable."
            )
        probe = subprocess.run(
            [
                found,
                "-c",
                "import sys, platform; print(platform.python_implementation(), "
                "'%d.%d.%d' % sys.version_info[:3])",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not probe[1].startswith(version + "."):
            raise zc.buildout.UserError(f"[{name}] {found} is Python {probe[1]}, not {version}")
        real = os.path.realpath(found)
        options["executable"] = found
        digest = hashlib.sha256(real.encode()).hexdigest()[:16]
        options["interpreter-id"] = f"{probe[0].lower()}-{probe[1]}@{digest}"

    def install(self) -> list[str]:
        return []

    update = install


def canonical_name(name: str) -> str:
    """PEP 503 name: `typing_extensions` and `Typing.Extensions` pin the same thing."""
    return re.sub(r"[-_.]+", "-", name).lower()


# Folders inside the package that the wheel leaves out (pyproject.toml excludes *.tests).
_NOT_SHIPPED = frozenset({"tests", "node_modules"})


def _project_files(source: Path) -> list[Path]:
    """The files a wheel of the project at ``source`` is built from (per pyproject.toml)."""
    pyproject = source / "pyproject.toml"
    config = tomllib.loads(pyproject.read_text())
    # Top-level packages from `[tool.setuptools.packages.find] include` ("kiln*" -> kiln/).
    found = config.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {})
    names = {pattern.split(".")[0].rstrip("*") for pattern in found.get("include", [])}
    roots = [source / name for name in sorted(names) if name] or [source]
    extras = (source / "setup.py", source / "README.md", source / "LICENSE")
    files = [pyproject] + [p for p in extras if p.is_file()]
    for root in roots:
        for path in sorted(root.rglob("*")):
            # Compiled files are outputs of the build (an editable install puts the C module
            # next to its source), not inputs of it; tests (and the peers they install) are
            # not part of the wheel.
            relative = path.relative_to(source).parts
            built = path.suffix in (".pyc", ".so") or "__pycache__" in relative
            if path.is_file() and not built and not _NOT_SHIPPED.intersection(relative):
                files.append(path)
    return files


def source_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for path in _project_files(source):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class Venv:
    """A virtual environment in the part, with pinned packages installed by pip.

    Options:
      python    interpreter (``${python3:executable}``)
      packages  pip requirements, one a line (names; versions come from [versions])
      source    optional local project directory: a wheel is built from a copy of it
      versions  section of pins (default ``python-versions``)
    With ``allow-picked-versions =
    false`` an installed distribution without a pin fails the part, naming the pins to add.
    pip reads the machine's own pip configuration (index, find-links): the profile names
    no package registry.
    """

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        options["location"] = os.path.join(buildout["buildout"]["parts-directory"], name)
        versions_section = options.get("versions", "python-versions")
        self.pins = {
            canonical_name(k): v
            for k, v in buildout[versions_section].items()
            if not k.startswith("_")
        }
        self.strict = buildout["buildout"].get("allow-picked-versions", "true") == "false"
        options["pins"] = " ".join(f"{n}=={self.pins[n]}" for n in sorted(self.pins))
        source = options.get("source", "").strip()
        if source:
            options["source"] = source = os.path.realpath(source)
            options["source-digest"] = source_digest(Path(source))

    def _pip(self, *args: str) -> None:
        location = Path(self.options["location"])
        command = [str(location / "bin" / "python"), "-m", "pip", "--no-input", *args]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise zc.buildout.UserError(
                f"[{self.name}] pip {' '.join(args[:2])} failed:\n{result.stderr[-3000:]}"
            )

    def _check_pins(self) -> None:
        location = Path(self.options["location"])
        listed = subprocess.run(
            [str(location / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        unpinned = [
            f"{dist['name']} = {dist['version']}"
            for dist in json.loads(listed)
            if canonical_name(dist["name"]) != "kiln"
            and self.pins.get(canonical_name(dist["name"])) != dist["version"]
        ]
        if unpinned and self.strict:
            raise zc.buildout.UserError(
                f"[{self.name}] picked versions without a pin (allow-picked-versions = false)."
                " Add to stack/kiln/versions.cfg:\n  " + "\n  ".join(unpinned)
            )

    def install(self) -> list[str]:
        location = Path(self.options["location"])
        if location.exists():
            shutil.rmtree(location)
        subprocess.run([self.options["python"], "-m", "venv", str(location)], check=True)
        with tempfile.TemporaryDirectory(prefix="kiln-venv-") as tmp:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text("\n".join(self.options["pins"].split()) + "\n")
            pinned = ["--no-compile", "--constraint", str(constraints)]
            self._pip("install", *pinned, "--upgrade", "pip", "setuptools", "wheel")
            requirements = _lines(self.options.get("packages", ""))
            source = self.options.get("source", "").strip()
            if source:
                # Build from a copy: building in the checkout would write build/ and
                # *.egg-info into other people's working tree.
                copy = Path(tmp) / "source"
                for path in _project_files(Path(source)):
                    target = copy / path.relative_to(source)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
                requirements.append(str(copy))
            if requirements:
                self._pip("install", *pinned, "--no-build-isolation", *requirements)
        self._check_pins()
        return [str(location)]

    def update(self) -> None:
        return None


class RequireCommand:
    """Fails the build early, with the package to install, when a system command is missing.

    Options: ``commands`` (names), ``debian-packages`` (what provides them). Sets one
    option per command with its path.
    """

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        missing = []
        for command in options["commands"].split():
            found = shutil.which(command)
            if found is None:
                missing.append(command)
            else:
                options[f"path-{command}"] = found
        if missing:
            packages = options.get("debian-packages", "").strip()
            hint = f" Install it: apt-get install {packages}." if packages else ""
            raise zc.buildout.UserError(
                f"[{name}] required command(s) not found on PATH: {', '.join(missing)}.{hint}"
            )

    def install(self) -> list[str]:
        return []

    update = install


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


def render_template(text: str, context: dict[str, str], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in context:
            raise zc.buildout.UserError(
                f"{where}: {{{{ {name} }}}} is not an option of the rendering part"
            )
        return context[name]

    return _PLACEHOLDER.sub(replace, text)


class Render:
    """Renders ``template`` (a file) or ``inline`` (text) to ``output``.

    In a template file, ``{{ name }}`` is replaced by option ``name``.  Inline text is
    taken as is, after buildout's own ``${}`` substitution; each line's leading ``|`` is
    dropped, so indentation survives buildout's parser.

    ``${section:option}`` is left to buildout, so the same template can hold references for
    the buildout that will read the output (as SlapOS's instance profiles do).
    Options: ``template``, ``output``, ``mode`` (octal, default 0644), plus the context.
    """

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        self.name = name
        self.options = options

    def install(self) -> list[str]:
        output = Path(self.options["output"])
        if "inline" in self.options:
            lines = self.options["inline"].strip("\n").splitlines()
            text = "\n".join(line.strip().removeprefix("|") for line in lines) + "\n"
        else:
            template = Path(self.options["template"])
            context = {k: v for k, v in self.options.items() if not k.startswith("_")}
            text = render_template(template.read_text(), context, f"[{self.name}] {template}")
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text)
        tmp.chmod(int(self.options.get("mode", "0644"), 8))
        tmp.replace(output)
        return [str(output)]

    update = install


class RunOnce:
    """Runs ``command`` once per instance and keeps its output in ``creates`` (mode 0600).

    For credentials that a service's own CLI generates (an ingestion policy, a cache
    upload user): the command runs only while ``creates`` does not exist, so requesting
    the instance again keeps them.  The output is never logged.
    """

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        self.name = name
        self.options = options

    def install(self) -> list[str]:
        creates = Path(self.options["creates"])
        if creates.exists():
            return []
        result = subprocess.run(
            ["/bin/sh", "-c", self.options["command"]], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise zc.buildout.UserError(
                f"[{self.name}] command failed (exit {result.returncode}): "
                f"{result.stderr.strip()[-2000:]}"
            )
        creates.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(creates, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as stream:
            stream.write(result.stdout)
        # Not returned as installed: uninstalling must not drop the credential.
        return []

    update = install


class RequireFile:
    """Fails early, with ``hint``, when the file at ``path`` (a parameter) is missing."""

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        path = options.get("path", "").strip()
        if not path or not Path(path).is_file():
            shown = path or "(empty)"
            raise zc.buildout.UserError(
                f"[{name}] no file at {shown}: {options.get('hint', 'check the parameter')}"
            )
        options["path"] = os.path.realpath(path)

    def install(self) -> list[str]:
        return []

    update = install


class Command:
    """Runs ``command`` every time the instance is requested (install and update).

    For steps that must see the instance's current parameters each time, such as writing a
    service's configuration from them and checking it.  A failure stops buildout with the
    command's own message (its stderr, or its stdout when stderr is empty), which names the
    bad input.  Output is not logged: it may name secrets.
    """

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        self.name = name
        self.options = options

    def install(self) -> list[str]:
        result = subprocess.run(
            ["/bin/sh", "-c", self.options["command"]], capture_output=True, text=True
        )
        if result.returncode != 0:
            message = (result.stderr.strip() or result.stdout.strip())[-3000:]
            raise zc.buildout.UserError(f"[{self.name}] {message}")
        return []

    update = install


class Switch:
    """Chooses between option sets by a parameter's value, for a service an instance
    parameter turns on or off.

    ``switch`` is the value (``on`` or ``off``); every option ``on-NAME`` / ``off-NAME`` gives
    option ``NAME`` its value in that case.  Other parts reference ``${section:NAME}`` (a
    supervisor program, a health check), so buildout has no conditional to evaluate:

        [jupyterlab]
        recipe = kiln:switch
        switch = ${instance-parameter:jupyterlab}
        on-program = [program:jupyterlab] ...
        off-program =

    Any other value fails the instance, naming the parameter's accepted values.
    """

    VALUES = ("on", "off")

    def __init__(self, buildout: Any, name: str, options: Options) -> None:
        value = options.get("switch", "").strip()
        if value not in self.VALUES:
            raise zc.buildout.UserError(
                f"[{name}] switch is {value!r}: give {' or '.join(self.VALUES)}"
            )
        prefix = f"{value}-"
        for key in [k for k in options if k.startswith(prefix)]:
            options[key.removeprefix(prefix)] = options[key]

    def install(self) -> list[str]:
        return []

    update = install
