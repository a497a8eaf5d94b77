"""fluentd's source pinned by its tree: seeded with `kiln software seed-sources --file`, built
by the real buildout through a real cache; another packing of the same tree verifies, a
changed tree is refused, and a missing Ruby library names its apt-get line."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.software.build import BuildError, build_release, repository_root
from kiln.testing.fluentd import fluentd_archive, fluentd_source_option
from kiln.testing.releases import CacheFixture, start_test_cache

pytestmark = pytest.mark.integration


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[CacheFixture]:
    running = start_test_cache(tmp_path / "cache")
    yield running
    running.stop()


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A profile that builds only component/fluentd."""
    directory = tmp_path / "checkout" / "software" / "fluentd-only"
    directory.mkdir(parents=True)
    root = repository_root()
    (directory / "software.cfg").write_text(
        "[buildout]\nextends =\n"
        f"  {root}/stack/kiln/buildout.cfg\n  {root}/component/fluentd/buildout.cfg\n"
        "parts =\n  fluentd-ruby\n  fluentd-source\n  fluentd\n"
    )
    return directory


def seed(cache: CacheFixture, archive: Path) -> str:
    """Seed with the command an offline site runs; answer its output."""
    env = {
        **os.environ,
        "KILN_CACHE_USER": cache.server.user,
        "KILN_CACHE_PASSWORD": cache.server.password,
    }
    command = [sys.executable, "-m", "kiln", "software", "seed-sources"]
    command += ["--cache", cache.server.url, "--sign-with", str(cache.key_dir / "builder.key")]
    command += ["--file", f"{archive}={fluentd_source_option('url')}"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def repacked(tmp_path: Path, change: dict[str, bytes] | None = None) -> Path:
    """The peers' archive unpacked and packed again (other bytes), optionally changed."""
    out = io.BytesIO()
    with tarfile.open(fluentd_archive()) as source, tarfile.open(fileobj=out, mode="w") as tar:
        for member in source:
            data = source.extractfile(member) if member.isfile() else None
            name = member.name.split("/", 1)[-1]
            if data is not None and change and name in change:
                content = change[name]
                member.size = len(content)
                data = io.BytesIO(content)
            member.mtime = 1  # other metadata than upstream's
            tar.addfile(member, data)
    path = tmp_path / "fluentd-repacked.tar.gz"
    path.write_bytes(gzip.compress(out.getvalue(), compresslevel=1))
    assert path.read_bytes() != fluentd_archive().read_bytes()
    return path


def build(release: Path, cache: CacheFixture, tmp_path: Path, **options: str):
    return build_release(
        release, tmp_path / "software", cache.config(), options=options, quiet=True
    )


def test_the_peers_archive_seeded_offline_builds_a_working_fluentd(
    cache: CacheFixture, release: Path, tmp_path: Path
) -> None:
    assert "seeded 1 file(s)" in seed(cache, fluentd_archive())
    result = build(release, cache, tmp_path)
    assert result.parts["fluentd-source"]["outcome"] == "built"
    fluentd = tmp_path / "software" / "parts" / "fluentd" / "bin" / "fluentd"
    version = subprocess.run([fluentd, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "fluentd 1.16.11"


def test_the_same_tree_packed_otherwise_verifies(
    cache: CacheFixture, release: Path, tmp_path: Path
) -> None:
    seed(cache, repacked(tmp_path))
    result = build(release, cache, tmp_path)
    assert result.parts["fluentd-source"]["outcome"] == "built"


def test_a_changed_tree_is_refused(cache: CacheFixture, release: Path, tmp_path: Path) -> None:
    seed(cache, repacked(tmp_path, {"lib/fluent/version.rb": b"VERSION = '6.6.6'\n"}))
    with pytest.raises(BuildError) as refused:
        build(release, cache, tmp_path)
    assert "the unpacked tree hashes to" in str(refused.value)
    assert fluentd_source_option("tree-hash") in str(refused.value)
    assert "refused" in str(refused.value)
    assert not (tmp_path / "software" / "parts" / "fluentd-source").exists()


def test_a_missing_ruby_library_names_the_apt_get_line(
    cache: CacheFixture, release: Path, tmp_path: Path
) -> None:
    libraries = "no_such_library ruby-no-such-library"
    with pytest.raises(BuildError) as missing:
        build(release, cache, tmp_path, **{"fluentd-ruby:libraries": libraries})
    assert "no_such_library" in str(missing.value)
    assert "apt-get install ruby-no-such-library" in str(missing.value)
