"""The parameters a release's instance accepts: `[instance-parameter]` of its instance profile.

`kiln instance up --help` lists them with their defaults, and `--param NAME=VALUE` is checked
against them, so a typo is an error that names the known parameters instead of a parameter
buildout silently ignores.
"""

from __future__ import annotations

import io
from pathlib import Path

import zc.buildout.configparser

SECTION = "instance-parameter"


def release_parameters(release_dir: Path) -> dict[str, str]:
    """Parameter name -> default value of ``release_dir``'s instance (empty: no default)."""
    profile = release_dir / "instance.cfg.in"
    if not profile.is_file():
        return {}
    # `{{ }}` placeholders are plain text to buildout's parser.
    sections = zc.buildout.configparser.parse(io.StringIO(profile.read_text()), str(profile))
    return {name: value.strip() for name, value in sections.get(SECTION, {}).items()}


def check_parameters(release_dir: Path, given: dict[str, str]) -> None:
    """Raise ValueError naming the known parameters when ``given`` has an unknown one."""
    known = release_parameters(release_dir)
    unknown = sorted(set(given) - set(known))
    if unknown:
        names = ", ".join(known) or "none"
        raise ValueError(
            f"unknown --param {', '.join(unknown)} for {release_dir.name} "
            f"(its parameters: {names}; see kiln instance up --help)"
        )


def parameters_help(software_root: Path) -> str:
    """Every release's parameters and defaults, for `kiln instance up --help`."""
    lines = ["\b", "Parameters (--param NAME=VALUE) and their defaults:"]
    for profile in sorted(software_root.glob("*/instance.cfg.in")):
        parameters = release_parameters(profile.parent)
        shown = ", ".join(f"{k}={v}" if v else f"{k} (no default)" for k, v in parameters.items())
        lines.append(f"  {profile.parent.name}: {shown or 'none'}")
    return "\n".join(lines)
