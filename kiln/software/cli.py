"""`kiln software` (build releases, seed the source cache) and `kiln instance` (run them)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from kiln.common.cli import directory_option, fail, parse_pairs
from kiln.shacache.config import (
    CacheConfig,
    ConfigError,
    cache_option,
    config_file_option,
    load_cache_config,
)
from kiln.software.build import (
    BuildError,
    BuildResult,
    build_release,
    default_software_dir,
    publishes,
    repository_root,
    resolve_release,
)
from kiln.software.instance import Instance, InstanceError, default_root, instantiate
from kiln.software.parameters import check_parameters, parameters_help


def print_parts(result: BuildResult) -> None:
    click.echo(f"\n{'part':<20} {'outcome':<10} {'seconds':>8}")
    for name, part in result.parts.items():
        click.echo(f"{name:<20} {part['outcome']:<10} {part['seconds']:>8.1f}")
    built = result.count("built", "uploaded")
    click.echo(
        f"{len(result.parts)} parts: {built} built, {result.count('hit')} from the cache, "
        f"{result.count('shared')} already shared, {result.count('no-files')} with no file, "
        f"{result.count('uploaded')} uploaded, {result.count('unchanged')} unchanged; "
        f"{result.seconds:.1f} s"
    )


def cache_config(config_file: Path | None = None, **flags: object) -> CacheConfig:
    """The cache that --config, the flags and the environment describe, by the one parser."""
    try:
        return load_cache_config(config_file, flags, os.environ)
    except ConfigError as problem:
        fail(str(problem))


@click.group()
def software() -> None:
    """Build software releases (software/NAME/software.cfg) with zc.buildout.

    Every buildout part goes through the binary cache: a part whose signature (options,
    dependencies, platform) is in the cache under a trusted signature is downloaded and
    unpacked instead of built.  See software/README.md.
    """


@software.command("build")
@click.argument("release")
@directory_option(
    "--software-dir",
    "Where to build (default: ~/.kiln/software/NAME, or $KILN_HOME/software/NAME).",
)
@directory_option(
    "--shared-dir",
    "Where parts with `shared = true` are installed, once for every release of the "
    "machine (buildout:shared-part-list; default: ~/.kiln/shared, or $KILN_HOME/shared).",
)
@cache_option("url")
@config_file_option
@cache_option("trusted_keys")
@cache_option("signing_key_file")
@cache_option("binary_cache")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="SECTION:OPTION=VALUE",
    help="Override a profile option, e.g. --set zstd:optimisation=-O3. Repeatable.",
)
def build_command(
    release: str,
    software_dir: Path | None,
    shared_dir: Path | None,
    assignments: tuple[str, ...],
    **flags: object,
) -> None:
    """Build RELEASE (software/NAME or NAME) into a software directory.

    \b
    Examples:
      kiln software build software/wendelin
      kiln software build software/wendelin --cache http://127.0.0.1:5080 --trust builder.pub
      KILN_CACHE_USER=uploader KILN_CACHE_PASSWORD=... kiln software build software/wendelin \\
          --cache http://127.0.0.1:5080 --trust builder.pub --sign-with builder.key
      kiln software build software/wendelin --config slapos.cfg   # its [networkcache]
    """
    overrides: dict[str, str] = {}
    for assignment in assignments:
        target, sep, value = assignment.partition("=")
        if not sep or ":" not in target:
            fail(f"--set {assignment!r}: write SECTION:OPTION=VALUE")
        overrides[target] = value
    config = cache_config(**flags)
    if config.names_a_cache and not config.trusted_keys:
        click.echo("warning: no --trust key: every cache entry will be refused", err=True)
    if config.signing_key_file and not publishes(config):
        click.echo(
            "warning: --sign-with without upload credentials: nothing will be uploaded", err=True
        )
    try:
        result = build_release(release, software_dir, config, overrides, shared_dir=shared_dir)
    except BuildError as error:
        fail(str(error))
    print_parts(result)
    click.echo(f"software directory: {result.software_dir}")


@software.command("check")
@click.argument("release")
@directory_option(
    "--software-dir",
    "The built release (default: where `kiln software build` puts it).",
)
def check_command(release: str, software_dir: Path | None) -> None:
    """Check that every ELF file of a built RELEASE links sanely (as SlapOS checkSoftware).

    No missing library, only libraries of the release or of the C runtime (libc, libm,
    libstdc++, ...), and rpaths that stay inside the release.  Exits 1 on any problem.
    """
    from kiln.software.elfcheck import check_software

    try:
        release_dir = resolve_release(release)
    except BuildError as error:
        fail(str(error))
    directory = (software_dir or default_software_dir(release_dir)).resolve()
    if not directory.is_dir():
        fail(f"{directory} does not exist: build it first (kiln software build {release})")
    files, problems = check_software(directory)
    for problem in problems:
        click.echo(f"FAIL {problem}")
    click.echo(f"{len(files)} ELF files checked under {directory}: {len(problems)} problem(s)")
    if problems:
        sys.exit(1)


@software.command("seed-sources")
@click.option(
    "--apt",
    "packages",
    multiple=True,
    metavar="PACKAGE=VERSION",
    help="Seed every file of this Debian source package (apt-get source --download-only, "
    "through this machine's apt mirrors). Repeatable.",
)
@click.option(
    "--from-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="With --apt: take the package's files from this directory (fetched elsewhere with "
    "`apt-get source --download-only`) instead of from apt.",
)
@click.option(
    "--npm",
    "npm_packages",
    multiple=True,
    metavar="NAME@VERSION",
    help="Seed this npm package's tarball (from the registry npm is configured with here), "
    "under the URL npm:NAME@VERSION that kiln:npm-package parts download. Repeatable.",
)
@click.option(
    "--file",
    "files",
    multiple=True,
    metavar="PATH=URL",
    help="Seed a local file under the URL a profile downloads it from. Repeatable.",
)
@cache_option("url")
@cache_option("signing_key_file")
def seed_sources_command(
    packages: tuple[str, ...],
    from_dir: Path | None,
    npm_packages: tuple[str, ...],
    files: tuple[str, ...],
    **flags: object,
) -> None:
    """Put source tarballs into the cache for sites whose network sources are unreachable.

    Entries are signed (--sign-with) and stored under file-urlmd5:<md5(URL)>, as SlapOS
    does; a build then downloads those URLs from the cache.

    \b
    Examples:
      kiln software seed-sources --cache http://uploader:PW@127.0.0.1:5080 \\
          --sign-with builder.key --apt libzstd=1.5.4+dfsg2-5
      kiln software seed-sources ... --apt libzstd=1.5.4+dfsg2-5 --from-dir ./debian-sources
      kiln software seed-sources ... --npm dygraphs@2.2.2
      kiln software seed-sources ... --file ./zstd-1.5.4.tar.gz=https://example.org/zstd.tar.gz
    """
    from kiln.shacache.client import CacheClient, CacheError
    from kiln.software.seed import seed_debian_package, seed_file, seed_npm_package

    if not packages and not files and not npm_packages:
        fail("nothing to seed: give --apt PACKAGE=VERSION, --npm NAME@VERSION or --file PATH=URL")
    config = cache_config(**flags)
    if not config.names_a_cache:
        fail("give --cache URL (with upload credentials) or set $KILN_CACHE_URL")
    if not config.signing_key_file:
        fail("give --sign-with KEY: cache entries must be signed")
    if not publishes(config):
        fail("no upload credentials: put them in the URL or in $KILN_CACHE_USER/PASSWORD")
    seeded = []
    try:
        client = CacheClient.from_config(config)
        for spec in packages:
            seeded += seed_debian_package(client, spec, from_dir)
        for spec in npm_packages:
            seeded.append(seed_npm_package(client, spec))
        for pair in files:
            path, sep, url = pair.partition("=")
            if not sep or not Path(path).is_file():
                fail(f"--file {pair!r}: write PATH=URL with an existing file")
            seeded.append(seed_file(client, Path(path), url))
    except (CacheError, ValueError, OSError) as error:  # ValueError: also unreadable keys
        fail(str(error))
    except Exception as error:  # debian_sources errors name the apt command that failed
        fail(f"{type(error).__name__}: {error}")
    for item in seeded:
        click.echo(f"{item.url}\n  key {item.key}  md5 {item.md5}  sha512 {item.sha512[:16]}…")
    click.echo(f"seeded {len(seeded)} file(s)")


# --- instances -----------------------------------------------------------------------------


@click.group()
def instance() -> None:
    """Instantiate built releases and run their services under supervisor.

    An instance is a directory: configuration, credentials generated for it, data, logs
    and a supervisord.  `up` is idempotent; `status` says whether it is healthy and why.
    """


@instance.command("up", epilog=parameters_help(repository_root() / "software"))
@click.argument("release")
@directory_option(
    "--root",
    "Instance directory (default: ~/.kiln/instance/NAME).",
)
@directory_option(
    "--software-dir",
    "The built release (default: where `kiln software build` puts it).",
)
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Instance parameter.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for health.")
def up_command(
    release: str,
    root: Path | None,
    software_dir: Path | None,
    params: tuple[str, ...],
    timeout: float,
) -> None:
    """Instantiate RELEASE in --root and start its services; wait until healthy."""
    try:
        release_dir = resolve_release(release)
    except BuildError as error:
        fail(str(error))
    parameters = parse_pairs(params, "--param")
    try:
        check_parameters(release_dir, parameters)
    except ValueError as error:
        fail(str(error))
    software_dir = (software_dir or default_software_dir(release_dir)).resolve()
    root = (root or default_root(release_dir.name)).resolve()
    existing = _credential_files(root)
    try:
        current = instantiate(software_dir, root, parameters)
        current.start()
        checks = current.wait_healthy(timeout)
    except InstanceError as error:
        fail(str(error))
    _print_checks(root, checks)
    for path in current.description.get("credentials", []):
        if path in existing:
            click.echo(f"credentials kept from the previous request (mode 0600): {path}")
        else:
            click.echo(f"credentials generated for this instance (mode 0600): {path}")
    for path in current.description.get("connection", []):
        click.echo(f"\nhow to connect ({path}):\n{Path(path).read_text().rstrip()}")
    if not all(check.ok for check in checks):
        sys.exit(1)


def _credential_files(root: Path) -> set[str]:
    """The credential files an instance already has (before `up` renders it again)."""
    try:
        listed = Instance(root).description.get("credentials", [])
    except (InstanceError, ValueError):
        return set()
    return {path for path in listed if Path(path).is_file()}


def _print_checks(root: Path, checks) -> None:
    healthy = all(check.ok for check in checks)
    click.echo(f"{root}: {'healthy' if healthy else 'NOT healthy'}")
    for check in checks:
        click.echo(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")


def _roots(root: Path | None, release: str | None = None) -> list[Path]:
    """--root, else RELEASE's default instance, else every default instance."""
    if root is not None:
        return [root.resolve()]
    if release is not None:
        try:
            return [default_root(resolve_release(release).name).resolve()]
        except BuildError as error:
            fail(str(error))
    found = sorted(
        p.parent.parent for p in default_root("*").parent.glob("*/etc/kiln-instance.json")
    )
    if not found:
        fail("no instance found under ~/.kiln/instance: give --root DIR")
    return found


@instance.command("down")
@click.argument("release", required=False)
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), help="Instance directory."
)
def down_command(release: str | None, root: Path | None) -> None:
    """Stop the services of an instance: --root, else RELEASE's default instance (as `up`
    puts it), else every default instance."""
    for directory in _roots(root, release):
        try:
            stopped = Instance(directory).stop()
        except InstanceError as error:
            fail(str(error))
        click.echo(f"{directory}: {'stopped' if stopped else 'was not running'}")


@instance.command("status")
@click.argument("release", required=False)
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), help="Instance directory."
)
def status_command(release: str | None, root: Path | None) -> None:
    """Say whether an instance is healthy, and why not: processes and health checks.

    The instance is --root, else RELEASE's default instance (as `up` puts it), else every
    default instance.  Exits 1 when an instance is not healthy.
    """
    all_healthy = True
    for directory in _roots(root, release):
        try:
            checks = Instance(directory).checks()
        except InstanceError as error:
            fail(str(error))
        _print_checks(directory, checks)
        all_healthy = all_healthy and all(check.ok for check in checks)
    if not all_healthy:
        sys.exit(1)
