"""Helpers for the release and cache tests, and the benchmark: a real cache, keys, snapshots."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kiln.buildout.recipes import _project_files
from kiln.shacache.config import CacheConfig, parse_cache_config
from kiln.software.build import BuildResult, build_release, repository_root
from kiln.software.instance import Instance, instantiate


def build_snapshot_release(
    snapshot: Path, name: str, workdir: Path, config: CacheConfig
) -> BuildResult:
    """Build ``software/<name>`` of a repository snapshot into ``workdir/software``, quietly."""
    return build_release(snapshot / "software" / name, workdir / "software", config, quiet=True)


# The Debian source packages the releases compile (component/*/buildout.cfg `debian-source:` URLs).
DEBIAN_SOURCES = ("libzstd=1.5.4+dfsg2-5",)
# The npm packages they fetch (component/*/buildout.cfg `kiln:npm-package` parts).
NPM_PACKAGES = ("dygraphs@2.2.2",)


def snapshot_repository(dest: Path) -> Path:
    """Copy what builds read (profiles, templates, the kiln project) into ``dest``.

    Builds from a snapshot are not disturbed by edits in the working tree while they run
    (the kiln part's signature covers the project's files).
    """
    root = repository_root()
    for path in _project_files(root):
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    for folder in ("component", "stack", "software"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix in (".cfg", ".in"):
                target = dest / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return dest


@dataclass
class CacheFixture:
    """A running `kiln cache serve` plus a builder key and an unrelated key."""

    server: object  # kiln.testing.cache.RunningCache
    key_dir: Path

    @property
    def public_key(self) -> str:
        return (self.key_dir / "builder.pub").read_text().strip()

    @property
    def stranger_public_key(self) -> str:
        return (self.key_dir / "stranger.pub").read_text().strip()

    def config(self, upload: bool = False, trust_stranger_only: bool = False) -> CacheConfig:
        """What `kiln software build --cache URL --trust KEY [--sign-with KEY]` configures."""
        flags = {
            "url": self.server.upload_url if upload else self.server.url,
            "trusted_keys": [self.stranger_public_key if trust_stranger_only else self.public_key],
            "signing_key_file": (self.key_dir / "builder.key") if upload else None,
        }
        return parse_cache_config(flags=flags)

    def client(self, upload: bool = False):
        from kiln.shacache.client import CacheClient
        from kiln.shacache.keys import TrustList, load_signing_key

        trust = TrustList()
        trust.add_public_key(self.public_key)
        url = self.server.upload_url if upload else self.server.url
        keys = [load_signing_key(self.key_dir / "builder.key")] if upload else []
        return CacheClient.from_url(url, trust=trust, signing_keys=keys, upload=upload)

    def blob_path(self, sha512: str) -> Path:
        matches = [p for p in Path(self.server.root).rglob(sha512) if p.is_file()]
        if not matches:
            raise FileNotFoundError(f"blob {sha512[:16]} not under {self.server.root}")
        return matches[0]

    def stop(self) -> None:
        self.server.stop()


def start_test_cache(workdir: Path) -> CacheFixture:
    from kiln.shacache.keys import generate_ed25519_key, write_secret_file
    from kiln.testing.cache import start_cache_server

    key_dir = workdir / "keys"
    key_dir.mkdir(parents=True, exist_ok=True)
    for name in ("builder", "stranger"):
        key = generate_ed25519_key(name)
        write_secret_file(key_dir / f"{name}.key", key.secret_text)
        (key_dir / f"{name}.pub").write_text(key.public_text + "\n")
    server = start_cache_server(workdir / "cache-root")
    return CacheFixture(server, key_dir)


def assert_software_links_sanely(software_dir: Path) -> int:
    """The checkSoftware-style check; answer how many ELF files were checked."""
    from kiln.software.elfcheck import check_software

    files, problems = check_software(software_dir)
    assert not problems, "\n".join(str(p) for p in problems)
    return len(files)


@dataclass
class InstanceRun:
    instance: Instance
    stopped: bool | None = None  # what Instance.stop answered on exit: was anything running


@contextlib.contextmanager
def healthy_instance(
    software_dir: Path, root: Path, parameters: dict[str, str]
) -> Iterator[InstanceRun]:
    """An instance of a built release in ``root``, started and asserted healthy within 30 s;
    stopped on exit, whatever happened."""
    run = InstanceRun(instantiate(software_dir, root, parameters))
    try:
        run.instance.start()
        checks = run.instance.wait_healthy(30)
        assert all(c.ok for c in checks), checks
        yield run
    finally:
        run.stopped = Instance(root).stop()
