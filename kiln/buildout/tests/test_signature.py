"""Part signatures: what they cover, and what they must not (install paths, buildout's Python)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.buildout.part_signature import (
    PathNormaliser,
    SignatureCalculator,
    distribution,
    platform_tuple,
    referenced_sections,
)

pytestmark = pytest.mark.unit

PLATFORM = {"multiarch": "x86_64-linux-gnu", "os": "debian-12"}


def calculator(
    directory: str, leaf_flag: str = "-O2", platform=PLATFORM, python="/usr/bin/python3"
):
    raw = {
        "buildout": {"directory": directory},
        "settings": {"prefix": "${zstd:location}"},
        "zstd": {
            "recipe": "slapos.recipe.cmmi",
            "flags": leaf_flag,
            "location": "${buildout:directory}/parts/zstd",
        },
        "venv": {"recipe": "kiln:venv", "uses": "${settings:prefix}/bin"},
        "other": {"recipe": "kiln:render", "inline": "hello"},
    }
    cooked = {
        "zstd": {
            "recipe": "slapos.recipe.cmmi",
            "flags": leaf_flag,
            "location": f"{directory}/parts/zstd",
            "__buildout_signature__": "setuptools-1.0-py3.11.egg zc.buildout-6 /some/python/path",
        },
        "venv": {"recipe": "kiln:venv", "uses": f"{directory}/parts/zstd/bin", "python": python},
        "other": {"recipe": "kiln:render", "inline": "hello", "output": f"{directory}/parts/other"},
    }
    normalise = PathNormaliser({directory: "@BUILDOUT@", python: "@BUILDOUT-PYTHON@"})
    return SignatureCalculator(raw, cooked, ["zstd", "venv", "other"], normalise, (), platform)


def signatures(**kwargs) -> dict[str, str]:
    calc = calculator(**kwargs)
    return {part: calc.signature(part) for part in ("zstd", "venv", "other")}


def test_same_inputs_in_another_directory_give_the_same_signatures() -> None:
    assert signatures(directory="/srv/a") == signatures(directory="/home/b/software")


def test_the_python_running_buildout_is_not_in_the_signature() -> None:
    assert signatures(directory="/a", python="/usr/bin/python3") == signatures(
        directory="/a", python="/opt/other/bin/python3.11"
    )


def test_buildout_own_signature_is_ignored() -> None:
    calc = calculator(directory="/a")
    calc.signature("zstd")
    assert "__buildout_signature__" not in calc.inputs["zstd"].options


def test_changing_a_leaf_option_changes_it_and_its_dependents_only() -> None:
    before = signatures(directory="/a")
    after = signatures(directory="/a", leaf_flag="-O3")
    assert after["zstd"] != before["zstd"]
    assert after["venv"] != before["venv"]  # depends on zstd through [settings]
    assert after["other"] == before["other"]


def test_dependencies_are_found_through_plain_sections() -> None:
    calc = calculator(directory="/a")
    assert calc.part_dependencies("venv") == {"zstd"}
    assert calc.part_dependencies("other") == set()


def test_platform_is_part_of_the_signature() -> None:
    other = {"multiarch": "aarch64-linux-gnu", "os": "debian-12"}
    assert (
        signatures(directory="/a")["other"] != signatures(directory="/a", platform=other)["other"]
    )


def test_referenced_sections_handles_self_references() -> None:
    assert referenced_sections({"a": "${:x} ${b:y} ${c:z}"}, "me") == {"b", "c"}


def test_circular_references_are_reported() -> None:
    raw = {"a": {"recipe": "r", "x": "${b:y}"}, "b": {"recipe": "r", "y": "${a:x}"}}
    cooked = {"a": {"recipe": "r"}, "b": {"recipe": "r"}}
    calc = SignatureCalculator(raw, cooked, ["a", "b"], PathNormaliser({}), (), PLATFORM)
    with pytest.raises(ValueError, match="circular"):
        calc.signature("a")


def test_files_named_by_options_are_hashed_by_content(tmp_path: Path) -> None:
    template = tmp_path / "instance.cfg.in"
    template.write_text("one")
    raw = {"t": {"recipe": "kiln:render", "template": str(template)}}

    def signature() -> str:
        cooked = {"t": {"recipe": "kiln:render", "template": str(template)}}
        normalise = PathNormaliser({str(tmp_path): "@SOURCE@"})
        return SignatureCalculator(raw, cooked, ["t"], normalise, [tmp_path], PLATFORM).signature(
            "t"
        )

    first = signature()
    template.write_text("two")
    assert signature() != first


def test_platform_tuple_names_compiler_and_distribution() -> None:
    platform = platform_tuple()
    assert platform["multiarch"].count("-") >= 2
    assert platform["os"] != "unknown-unknown"


def test_distribution_reads_os_release(tmp_path: Path) -> None:
    os_release = tmp_path / "os-release"
    os_release.write_text('ID=debian\nVERSION_ID="12"\n')
    assert distribution(os_release) == "debian-12"
    assert distribution(tmp_path / "missing") == "unknown"


def test_bounded_paths_replace_whole_path_components_only() -> None:
    normalise = PathNormaliser({"/sw": "@BUILDOUT@"}, {"/srv/shared": "@SHARED@", "/": "@ROOT@"})
    assert normalise("/srv/shared/liba/x /srv/shared2/y") == "@SHARED@/liba/x /srv/shared2/y"
    # The historical, unbounded rule is kept (existing signatures do not change); "/" never.
    assert normalise("/sw2/x") == "@BUILDOUT@2/x"


def test_patch_files_next_to_a_profile_are_hashed_by_content(tmp_path: Path) -> None:
    from kiln.buildout.part_signature import file_digests

    profile, software = tmp_path / "profile", tmp_path / "profile" / "sw"
    software.mkdir(parents=True)
    (profile / "fix.patch").write_text("one")
    (software / "output.cfg").write_text("built")
    values = [f"{profile}/fix.patch#0123", f"{software}/output.cfg"]
    digests = file_digests(values, [], [profile], [software])
    assert list(digests) == ["@PROFILE@/fix.patch"]  # `#md5` stripped; outputs left out
    (profile / "fix.patch").write_text("two")
    assert file_digests(values, [], [profile], [software]) != digests
