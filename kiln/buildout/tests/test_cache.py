"""The binary cache extension in real buildout runs against a real `kiln cache serve`.

A small profile of quick parts (kiln:render) with a dependency chain leaf -> middle -> top
and an unrelated part keeps these tests fast; the releases' own tests (software/*/test)
do the same with compiled parts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kiln.buildout.extension import REPORT_FILE
from kiln.shacache.config import CacheConfig, networkcache_lines, parse_cache_config
from kiln.software.build import BuildError, run_buildout
from kiln.testing.releases import CacheFixture, start_test_cache

pytestmark = pytest.mark.integration

PROFILE = """
[buildout]
extensions = kiln
parts = leaf middle top other
directory = {directory}

[networkcache]
{networkcache}

[leaf]
recipe = kiln:render
flavour = {flavour}
output = ${{buildout:parts-directory}}/leaf/leaf.txt
inline = leaf ${{:flavour}}

[middle]
recipe = kiln:render
output = ${{buildout:parts-directory}}/middle/middle.txt
inline = middle reads ${{leaf:output}}

[top]
recipe = kiln:render
output = ${{buildout:parts-directory}}/top/top.txt
inline = top reads ${{middle:output}}

[other]
recipe = kiln:render
output = ${{buildout:parts-directory}}/other/other.txt
inline = unrelated
"""


def build(directory: Path, config: CacheConfig, flavour: str = "plain", extra: str = "") -> dict:
    directory.mkdir(parents=True)
    options = "\n".join(networkcache_lines(config))
    profile = directory / "buildout.cfg"
    profile.write_text(
        PROFILE.format(directory=directory, networkcache=options, flavour=flavour) + extra
    )
    run_buildout(profile, directory, quiet=True)
    return json.loads((directory / REPORT_FILE).read_text())["parts"]


def outcomes(report: dict) -> dict[str, str]:
    return {name: part["outcome"] for name, part in report.items()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    running = start_test_cache(tmp_path_factory.mktemp("cache"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def cold(cache: CacheFixture, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The first build, with an empty cache and upload credentials."""
    return build(tmp_path_factory.mktemp("cold") / "sw", cache.config(upload=True))


def test_cold_build_uploads_every_part(cold: dict) -> None:
    assert outcomes(cold) == dict.fromkeys(("leaf", "middle", "top", "other"), "uploaded")
    assert all("miss (no trusted entry" in part["notes"][0] for part in cold.values())


def test_fresh_directory_hits_every_part_and_relocates(
    cold: dict, cache: CacheFixture, tmp_path: Path
) -> None:
    directory = tmp_path / "elsewhere"
    report = build(directory, cache.config())
    assert outcomes(report) == dict.fromkeys(("leaf", "middle", "top", "other"), "hit")
    assert {p["signature"] for p in report.values()} == {p["signature"] for p in cold.values()}
    # Files naming the old build directory now name the new one.
    middle = (directory / "parts" / "middle" / "middle.txt").read_text()
    assert middle.strip() == f"middle reads {directory}/parts/leaf/leaf.txt"


def test_leaf_option_change_rebuilds_only_that_part_and_dependents(
    cold: dict, cache: CacheFixture, tmp_path: Path
) -> None:
    report = build(tmp_path / "changed", cache.config(upload=True), flavour="spicy")
    assert outcomes(report) == {
        "leaf": "uploaded",
        "middle": "uploaded",
        "top": "uploaded",
        "other": "hit",
    }
    assert report["other"]["signature"] == cold["other"]["signature"]
    assert report["leaf"]["signature"] != cold["leaf"]["signature"]


def test_untrusted_signature_is_refused_and_part_rebuilt(
    cold: dict, cache: CacheFixture, tmp_path: Path
) -> None:
    report = build(tmp_path / "distrustful", cache.config(trust_stranger_only=True))
    assert outcomes(report) == dict.fromkeys(("leaf", "middle", "top", "other"), "built")
    for part in report.values():
        assert any(note.startswith("refused untrusted entry") for note in part["notes"])


def test_tampered_blob_is_refused_and_part_rebuilt(
    cold: dict, cache: CacheFixture, tmp_path: Path
) -> None:
    key = "kiln-part:" + cold["other"]["signature"]
    (entry,) = cache.client().select(key)
    blob = cache.blob_path(entry["sha512"])
    original = blob.read_bytes()
    blob.write_bytes(original[:-8] + b"tampered")
    try:
        report = build(tmp_path / "tampered", cache.config())
    finally:
        blob.write_bytes(original)
    assert outcomes(report) == {"leaf": "hit", "middle": "hit", "top": "hit", "other": "built"}
    assert any("corrupt" in note for note in report["other"]["notes"])
    assert (tmp_path / "tampered" / "parts" / "other" / "other.txt").read_text() == "unrelated\n"


def test_no_cache_configured_builds_everything(tmp_path: Path) -> None:
    report = build(tmp_path / "offline", parse_cache_config())
    assert outcomes(report) == dict.fromkeys(("leaf", "middle", "top", "other"), "built")


SOURCE_PART = """
[buildout]
parts += source

[source]
recipe = slapos.recipe.build:download
url = {url}
md5sum = {md5}
"""


def test_source_comes_from_the_cache_when_the_network_source_is_unreachable(
    cache: CacheFixture, tmp_path: Path
) -> None:
    from kiln.software.seed import seed_file

    tarball = tmp_path / "hello-1.0.tar.gz"
    tarball.write_bytes(b"pretend this is a tarball\n" * 100)
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    # Port 9 (discard) on 127.0.0.1: nothing listens, the network source is down.
    url = "http://127.0.0.1:9/hello-1.0.tar.gz"
    seeded = seed_file(cache.client(upload=True), tarball, url)
    assert seeded.key == "file-urlmd5:" + hashlib.md5(url.encode()).hexdigest()

    directory = tmp_path / "sw"
    build(directory, cache.config(), extra=SOURCE_PART.format(url=url, md5=md5))
    downloaded = directory / "parts" / "source" / "source"  # named after the part
    assert downloaded.read_bytes() == tarball.read_bytes()
    sources = json.loads((directory / REPORT_FILE).read_text())["sources"]
    assert any("from cache" in event for event in sources)


def test_missing_source_fails_naming_the_seed_command(cache: CacheFixture, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/never-seeded-2.0.tar.gz"
    extra = SOURCE_PART.format(url=url, md5="0" * 32)
    with pytest.raises(BuildError) as failure:
        build(tmp_path / "sw", cache.config(), extra=extra)
    message = str(failure.value)
    assert "not in the cache" in message
    assert "kiln software seed-sources" in message


def test_source_with_wrong_checksum_in_cache_is_not_used(
    cache: CacheFixture, tmp_path: Path
) -> None:
    from kiln.software.seed import seed_file

    url = "http://127.0.0.1:9/swapped-3.0.tar.gz"
    impostor = tmp_path / "impostor.tar.gz"
    impostor.write_bytes(b"not what the profile pinned")
    seed_file(cache.client(upload=True), impostor, url)
    pinned = hashlib.md5(b"the real tarball").hexdigest()
    with pytest.raises(BuildError) as failure:
        build(tmp_path / "sw", cache.config(), extra=SOURCE_PART.format(url=url, md5=pinned))
    assert "not in the cache" in str(failure.value)
