"""kiln:switch on upstream zc.buildout: a parameter turns a service's options on or off."""

from __future__ import annotations

from pathlib import Path

import pytest
import zc.buildout
import zc.buildout.buildout

pytestmark = pytest.mark.unit

PROFILE = """\
[buildout]
parts = out
offline = true

[parameter]
service = {value}

[service]
recipe = kiln:switch
switch = ${{parameter:service}}
on-program = [program:service]
on-check = , {{"name": "service"}}
off-program =
off-check =

[out]
recipe = kiln:render
output = ${{buildout:directory}}/out
inline = {{"checks": [{{"name": "always"}}${{service:check}}]}} ${{service:program}}
"""


def rendered(tmp_path: Path, value: str) -> str:
    profile = tmp_path / "buildout.cfg"
    profile.write_text(PROFILE.format(value=value))
    buildout = zc.buildout.buildout.Buildout(str(profile), [], use_user_defaults=False)
    return buildout["out"]["inline"]


def test_on_and_off_choose_the_options(tmp_path: Path) -> None:
    on = rendered(tmp_path, "on")
    assert on == '{"checks": [{"name": "always"}, {"name": "service"}]} [program:service]'
    assert rendered(tmp_path, "off") == '{"checks": [{"name": "always"}]} '


def test_another_value_names_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(zc.buildout.UserError, match="switch is 'yes': give on or off"):
        rendered(tmp_path, "yes")
