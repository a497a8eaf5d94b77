"""SlapOS-style shared parts through the binary cache, on a chain of three tiny C components.

liba <- libb (RUNPATH to liba, patched from ${:_profile_base_location_}) <- hello (RUNPATH to
libb), each slapos.recipe.cmmi with `shared = true`, plus a part of the software directory
that names hello.  Real zc.buildout, real `kiln cache serve`; the tests run in file order and
share the module's builds.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kiln.buildout.shared_parts import remove_tree
from kiln.software.build import BuildResult, build_release
from kiln.testing.releases import CacheFixture, start_test_cache
from kiln.testing.slapos_chain import PARTS, copy_chain

pytestmark = pytest.mark.slow

SHARED = ("liba", "libb", "hello")


def outcomes(result: BuildResult) -> dict[str, str]:
    return {name: part["outcome"] for name, part in result.parts.items()}


def signatures(result: BuildResult) -> dict[str, str]:
    return {name: part["signature"] for name, part in result.parts.items()}


def greeting(software_dir: Path) -> str:
    hello = software_dir / "bin" / "hello"
    return subprocess.run([hello], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-chain")


@pytest.fixture(scope="module")
def cache(work: Path):
    running = start_test_cache(work / "cache")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def release(work: Path) -> Path:
    return copy_chain(work / "profiles")


@pytest.fixture(scope="module")
def cold(cache: CacheFixture, release: Path, work: Path) -> BuildResult:
    return build_release(
        release, work / "cold", cache.config(upload=True), quiet=True, shared_dir=work / "shared"
    )


@pytest.fixture(scope="module")
def warm(cache: CacheFixture, release: Path, work: Path, cold: BuildResult) -> BuildResult:
    """Another machine: the same shared path, empty; a software directory at another path."""
    remove_tree(work / "shared")
    return build_release(
        release, work / "elsewhere" / "warm", cache.config(), quiet=True, shared_dir=work / "shared"
    )


def test_cold_build_installs_shared_parts_and_uploads_them(cold: BuildResult, work: Path) -> None:
    assert outcomes(cold) == dict.fromkeys(PARTS, "uploaded")
    assert greeting(cold.software_dir) == "greetings from kiln"  # the patch applied
    for name in SHARED:
        (location,) = (work / "shared" / name).iterdir()
        assert (location / ".buildout-shared.json").is_file()
    assert not (cold.software_dir / "parts" / "hello").exists()


def test_warm_build_at_another_path_restores_every_part(
    cold: BuildResult, warm: BuildResult, work: Path
) -> None:
    assert outcomes(warm) == dict.fromkeys(PARTS, "hit")
    assert signatures(warm) == signatures(cold)
    assert greeting(warm.software_dir) == "greetings from kiln"
    (hello,) = (work / "shared" / "hello").glob("*/bin/hello")
    dynamic = subprocess.run(["readelf", "-d", hello], capture_output=True, text=True).stdout
    assert f"[{work / 'shared' / 'libb'}/" in dynamic  # RUNPATH reused unchanged


def test_a_second_release_reuses_the_shared_directory(
    cache: CacheFixture, release: Path, work: Path, warm: BuildResult
) -> None:
    again = build_release(
        release, work / "third", cache.config(), quiet=True, shared_dir=work / "shared"
    )
    assert outcomes(again) == {**dict.fromkeys(SHARED, "shared"), "hello-command": "hit"}


def test_profile_copied_elsewhere_has_the_same_signatures(
    cache: CacheFixture, work: Path, cold: BuildResult, warm: BuildResult
) -> None:
    copy = copy_chain(work / "another" / "copy" / "of-profiles")
    result = build_release(
        copy, work / "from-copy", cache.config(), quiet=True, shared_dir=work / "shared"
    )
    assert signatures(result) == signatures(cold)
    assert outcomes(result) == {**dict.fromkeys(SHARED, "shared"), "hello-command": "hit"}


def test_option_of_the_deepest_part_changed_in_place_rebuilds_it_and_its_dependents(
    cache: CacheFixture, release: Path, work: Path, warm: BuildResult
) -> None:
    changed = build_release(
        release,
        warm.software_dir,
        cache.config(),
        {"liba:optimisation": "-O1"},
        quiet=True,
        shared_dir=work / "shared",
    )
    assert outcomes(changed) == dict.fromkeys(PARTS, "built")
    assert greeting(changed.software_dir) == "greetings from kiln"
    back = build_release(
        release, warm.software_dir, cache.config(), quiet=True, shared_dir=work / "shared"
    )
    # Shared parts stay: the previous ones are found again, the software directory's part
    # comes back from the cache.
    assert outcomes(back) == {**dict.fromkeys(SHARED, "shared"), "hello-command": "hit"}


def test_removed_shared_directory_is_restored_never_an_empty_hit(
    cache: CacheFixture, release: Path, work: Path, warm: BuildResult
) -> None:
    remove_tree(work / "shared")
    result = build_release(
        release, warm.software_dir, cache.config(), quiet=True, shared_dir=work / "shared"
    )
    assert {outcomes(result)[name] for name in SHARED} == {"hit"}
    assert greeting(result.software_dir) == "greetings from kiln"


def test_dependents_of_a_part_of_the_software_directory_are_rebuilt_in_place(
    release: Path, work: Path
) -> None:
    """Without shared parts, libb's options name parts/liba whatever liba's options are:
    only the signature tells buildout that libb must be reinstalled."""
    not_shared = {f"{name}:shared": "false" for name in SHARED}
    directory = work / "not-shared"
    first = build_release(release, directory, None, not_shared, quiet=True)
    assert outcomes(first) == dict.fromkeys(PARTS, "built")
    changed = build_release(
        release, directory, None, {**not_shared, "liba:optimisation": "-O1"}, quiet=True
    )
    assert outcomes(changed) == dict.fromkeys(PARTS, "built")
    assert greeting(directory) == "greetings from kiln"
    unchanged = build_release(
        release, directory, None, {**not_shared, "liba:optimisation": "-O1"}, quiet=True
    )
    assert outcomes(unchanged) == dict.fromkeys(PARTS, "unchanged")


def test_the_command_prints_one_summary_and_takes_buildout_options(
    release: Path, work: Path
) -> None:
    """`kiln software build` prints its table; the extension's own summary line is for
    buildout runs without kiln."""
    command = [sys.executable, "-m", "kiln", "software", "build", str(release)]
    command += ["--software-dir", str(work / "cli"), "--shared-dir", str(work / "cli-shared")]
    command += ["--set", "buildout:newest=false"]  # joins the generated [buildout] section
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "binary cache summary" not in output
    assert output.count("4 parts: 4 built") == 1


def test_two_builds_into_one_shared_directory_at_once_install_each_part_once(
    release: Path, work: Path
) -> None:
    """Two software directories, one shared directory, both builds started together: the
    recipe starts by removing the part's location, so without the lock each build would
    destroy what the other installs.  liba lingers 4 s before `make install`, so the second
    build always arrives while the first holds liba."""
    shared = work / "concurrent-shared"
    slow_liba = {"liba:pre-install": "sleep 4"}

    def build(name: str) -> BuildResult:
        return build_release(release, work / name, None, slow_liba, quiet=True, shared_dir=shared)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(build, ("concurrent-1", "concurrent-2"))
    for name in SHARED:
        assert sorted([outcomes(first)[name], outcomes(second)[name]]) == ["built", "shared"]
        (location,) = (shared / name).iterdir()
        assert (location / ".buildout-shared.json").is_file()
    waited = [
        note
        for result in (first, second)
        for note in result.parts["liba"]["notes"]
        if note.startswith("waiting for another build installing")
    ]
    assert len(waited) == 1
    assert greeting(first.software_dir) == greeting(second.software_dir) == "greetings from kiln"
