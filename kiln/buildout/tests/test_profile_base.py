"""${:_profile_base_location_} on upstream zc.buildout: real profiles, parsed by buildout."""

from __future__ import annotations

from pathlib import Path

import pytest
import zc.buildout.buildout

from kiln.buildout.profile_base import OPTION, _base_of, apply_profile_base_location

pytestmark = pytest.mark.unit


def load(profile: Path) -> zc.buildout.buildout.Buildout:
    return zc.buildout.buildout.Buildout(str(profile), [], use_user_defaults=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_each_value_points_next_to_the_file_that_wrote_it(tmp_path: Path) -> None:
    write(
        tmp_path / "comp" / "liba" / "buildout.cfg",
        "[liba]\nrecipe = kiln:render\npatches = ${:_profile_base_location_}/a.patch\n",
    )
    release = write(
        tmp_path / "software" / "x" / "software.cfg",
        "[buildout]\nextends = ../../comp/liba/buildout.cfg\nparts =\n"
        "[liba]\nhook = ${:_profile_base_location_}/hook.py\n",
    )
    buildout = load(release)
    directories = apply_profile_base_location(buildout)
    liba = buildout["liba"]
    assert liba["patches"] == f"{tmp_path}/comp/liba/a.patch"
    assert liba["hook"] == f"{tmp_path}/software/x/hook.py"
    # The section's own base: where its recipe was set (slapos.recipe.cmmi reads it).
    assert liba[OPTION] == f"{tmp_path}/comp/liba"
    assert tmp_path / "comp" / "liba" in directories


def test_upstream_buildout_alone_refuses_the_option(tmp_path: Path) -> None:
    text = "[buildout]\nparts =\n[x]\ny = ${:_profile_base_location_}\n"
    release = write(tmp_path / "b.cfg", text)
    with pytest.raises(zc.buildout.UserError, match="does not exist"):
        load(release)["x"]


def test_a_remote_profile_base_is_its_normalised_url() -> None:
    source = "http://127.0.0.1:8080/software/NAME/../../component/liba/buildout.cfg"
    assert _base_of(source) == "http://127.0.0.1:8080/component/liba"
