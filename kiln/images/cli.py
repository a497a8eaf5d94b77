"""`kiln image`: validate, build (bake + boot test), test, boot, push, pull, export-ec2."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import click

from kiln.common.cli import fail, parse_pairs
from kiln.shacache.cli import client_options
from kiln.shacache.config import (
    CacheConfig,
    ConfigError,
    cache_option,
    config_file_option,
    load_cache_config,
)

PATH = click.Path(path_type=Path)


def _load(template: Path, variables: tuple[str, ...]):
    try:
        import diskimage_builder  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as error:
        fail(
            f"kiln image needs the `images` extra ({error.name} is missing): "
            "pip install 'kiln[images]'"
        )
    from kiln.images.template import TemplateError, load_template

    try:
        return load_template(template, parse_pairs(variables, "--var"))
    except TemplateError as error:
        fail(str(error))


def _echo(line: str) -> None:
    click.echo(line)


var_option = click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a template variable (also $KILN_VAR_NAME). Repeatable.",
)


@click.group()
def image() -> None:
    """Bake packer-style templates into qcow2/raw images with diskimage-builder, and boot them.

    \b
    A new user's first image (see images/README.md):
      kiln image build images/appliance.yaml -o out/    # bake, then boot-test
      kiln image boot out/appliance.qcow2               # URLs and generated credentials

    Every image is booted and checked before it is called done (`kiln image test`).
    """


@image.command("validate")
@click.argument("template", type=PATH)
@var_option
def validate_command(template: Path, variables: tuple[str, ...]) -> None:
    """Check TEMPLATE; errors name the file, the key and what is allowed."""
    model = _load(template, variables)
    click.echo(
        f"{template}: ok: image {model.name!r}, Debian {model.source.release} "
        f"{model.source.architecture}, releases {', '.join(model.releases) or 'none'}, "
        f"instances {', '.join(i.name for i in model.instances) or 'none'}, "
        f"outputs {', '.join(model.outputs)}"
    )


@image.command("build")
@click.argument("template", type=PATH)
@click.option("-o", "--output-dir", type=PATH, default=Path("."), show_default=True)
@var_option
@cache_option("url")
@config_file_option
@cache_option("trusted_keys")
@cache_option("signing_key_file")
@click.option("--no-test", is_flag=True, help="Skip the boot test (the image is then untested).")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to readiness at test.")
def build_command(
    template: Path,
    output_dir: Path,
    variables: tuple[str, ...],
    no_test: bool,
    timeout: float,
    **flags: object,
) -> None:
    """Bake TEMPLATE with disk-image-create, write the manifest, then boot-test the image.

    Releases are built inside the image with `kiln software build` through the cache: with a
    warm cache every part is restored, none compiled.  The root filesystem after the package
    phase is a signed layer in the same cache.  The full DIB log is kept beside the image.
    The cache is configured as for `kiln software build`: --cache (or $KILN_CACHE_URL, or a
    [networkcache] file with --config), upload credentials in $KILN_CACHE_USER and
    $KILN_CACHE_PASSWORD or in that file, never in a --cache URL.

    \b
    Example:
      KILN_CACHE_USER=uploader KILN_CACHE_PASSWORD=... kiln image build images/appliance.yaml \\
          -o out/ --cache http://127.0.0.1:5080 --trust builder.pub --sign-with builder.key
    """
    from kiln.images.bake import BakeError, bake
    from kiln.software.build import publishes

    model = _load(template, variables)
    cache = _cache_config(**flags)
    if not cache.names_a_cache:
        cache = None
    elif not cache.trusted_keys:
        fail("--cache needs --trust KEY: entries signed by no trusted key are refused")
    elif cache.signing_key_file and not publishes(cache):
        click.echo("warning: --sign-with without upload credentials: nothing uploaded", err=True)
    click.echo(f"baking {template} -> {output_dir.resolve()}/{model.name}.*")
    try:
        result = bake(model, output_dir, cache, _echo)
    except BakeError as error:
        fail(str(error))
    click.echo(f"baked in {result.seconds:.0f} s; manifest: {result.manifest_path}")
    for path in result.images:
        click.echo(f"  {path} ({path.stat().st_size / 1e6:.0f} MB)")
    if no_test:
        click.secho(
            "WARNING: --no-test: this image was NOT booted nor checked; "
            f"run `kiln image test {result.images[0]}` before calling it done",
            fg="yellow",
            bold=True,
            err=True,
        )
        return
    # The raw output boots faster than the compressed qcow2 and holds the same filesystem.
    raw = [p for p in result.images if p.suffix == ".raw"]
    _run_test(raw[0] if raw else result.images[0], timeout)


def _run_test(image_path: Path, timeout: float) -> None:
    from kiln.images.boottest import run_boot_test
    from kiln.images.qemu import BootError
    from kiln.images.seed import SeedError

    try:
        report = run_boot_test(image_path, _echo, timeout)
    except (BootError, SeedError) as error:
        fail(f"boot test of {image_path} failed: {error}")
    if not report.ok:
        fail(f"boot test of {image_path}: some checks failed (see above)")
    click.echo(
        f"boot test passed ({report.accelerator}, ready in "
        f"{', '.join(f'{s:.0f} s' for s in report.ready_seconds)})"
    )


@image.command("test")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, path_type=Path))
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to readiness.")
def test_command(image_path: Path, timeout: float) -> None:
    """Boot IMAGE on a throwaway overlay and check it from outside.

    Waits for the guest's `kiln-ready` line on the serial console, then: HTTP ingest answers
    204 and stores a resent chunk once, the monitor answers, SSH takes the generated key and
    refuses passwords, and a second boot gets different credentials.  KVM where it works,
    TCG otherwise.
    """
    _run_test(image_path, timeout)


@image.command("boot")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, path_type=Path))
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to readiness.")
@click.option("--state-dir", type=PATH, help="Where the overlay and logs go (default: a temp dir).")
def boot_command(image_path: Path, timeout: float, state_dir: Path | None) -> None:
    """Run IMAGE for you: prints the URLs and generated credentials; Ctrl-C stops it cleanly."""
    from kiln.images.boottest import boot_for_user
    from kiln.images.qemu import BootError

    workdir = state_dir or Path(tempfile.mkdtemp(prefix="kiln-image-boot-"))
    try:
        vm = boot_for_user(image_path, workdir, timeout, _echo)
    except BootError as error:
        fail(str(error))
    click.echo("running; Ctrl-C stops the VM")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while vm.process and vm.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping the VM (ACPI power-off)...")
        vm.stop()
        click.echo("stopped")


def _forwards(values: tuple[str, ...]) -> dict[int, int]:
    forwards = {}
    for value in values:
        host, sep, guest = value.partition(":")
        if not sep or not host.isdigit() or not guest.isdigit():
            fail(f"--forward {value!r}: write HOST_PORT:GUEST_PORT, e.g. 2222:22")
        forwards[int(guest)] = int(host)
    return forwards


@image.command("run")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, path_type=Path))
@click.option("--state-dir", type=PATH, required=True, help="The overlay, console and SSH key.")
@click.option(
    "--forward", multiple=True, metavar="HOST_PORT:GUEST_PORT", help="Forward a TCP port."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Where forwards listen.")
@click.option(
    "--status-listen",
    default="127.0.0.1:8090",
    show_default=True,
    metavar="HOST:PORT",
    help="Serve the guest's readiness: 200 after its kiln-ready line, 503 and why before.",
)
@click.option("--memory", default=1536, show_default=True, help="MiB of guest memory.")
@click.option("--cpus", default=2, show_default=True)
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto")
@click.option(
    "--stop-timeout",
    default=30.0,
    show_default=True,
    help="Seconds the guest has to power off on SIGTERM before qemu is killed.",
)
def run_command(
    image_path: Path,
    state_dir: Path,
    forward: tuple[str, ...],
    host: str,
    status_listen: str,
    memory: int,
    cpus: int,
    accel: str,
    stop_timeout: float,
) -> None:
    """Run IMAGE in the foreground (for a supervisor: software/kvm's instance).

    The same runner as `kiln image test`: a throwaway overlay (IMAGE is never written), a
    NoCloud seed with an SSH key made in --state-dir, the serial console in a file.  The
    readiness URL answers 200 once the guest printed `kiln-ready`, 503 with how far the boot
    got before.  SIGTERM powers the VM off.
    """
    from kiln.common.addresses import parse_host_port
    from kiln.images.qemu import BootError
    from kiln.images.vmrun import run_vm, vm_for

    if accel != "auto":
        os.environ["KILN_QEMU_ACCEL"] = accel
    try:
        status_host, status_port = parse_host_port(status_listen)
    except ValueError as error:
        fail(f"--status-listen {error}")
    vm = vm_for(image_path, state_dir, _forwards(forward), host, memory, cpus)
    try:
        code = run_vm(vm, status_host, status_port, _echo, stop_timeout)
    except (BootError, OSError) as error:
        fail(str(error))
    sys.exit(code)


def _cache_config(config_file: Path | None = None, **flags: object) -> CacheConfig:
    """--cache, --config, --trust, --sign-with and the environment, by the cache's one parser,
    exactly as `kiln software build` reads them."""
    try:
        return load_cache_config(config_file, flags, os.environ)
    except ConfigError as error:
        fail(str(error))


def _store_client(upload: bool, progress: bool | None, **flags: object):
    """The client of push and pull: the flags of `kiln cache upload|download`, read alike."""
    from kiln.shacache.cli import client_config
    from kiln.shacache.client import CacheClient
    from kiln.shacache.keys import KeyError_
    from kiln.software.build import publishes

    config = client_config(**flags)
    if not config.trusted_keys:
        fail("--trust KEY is required: images signed by no trusted key are refused")
    if upload and not publishes(config):
        fail(
            "push needs --sign-with KEY and upload credentials ($KILN_CACHE_USER and"
            " $KILN_CACHE_PASSWORD, or an upload URL in a [networkcache] file: --config)"
        )
    try:
        return CacheClient.from_config(config, progress=progress)
    except KeyError_ as error:
        fail(str(error))


@image.command("push")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, path_type=Path))
@click.option("--key", "name", required=True, metavar="NAME", help="Publish as kiln-image:NAME.")
@client_options
def push_command(image_path: Path, name: str, progress: bool | None, **flags: object) -> None:
    """Upload IMAGE and its manifest to the cache as a signed entry kiln-image:NAME.

    The cache is configured as for `kiln cache upload`: credentials in $KILN_CACHE_USER and
    $KILN_CACHE_PASSWORD or in a [networkcache] file (--config), never in a --cache URL.
    """
    from kiln.images.store import StoreError, push
    from kiln.shacache.client import CacheError

    client = _store_client(upload=True, progress=progress, **flags)
    try:
        metadata = push(client, image_path, name)
    except (StoreError, CacheError) as error:
        fail(str(error))
    click.echo(f"pushed {image_path.name} as kiln-image:{name} (sha512 {metadata['sha512'][:16]}…)")


@image.command("pull")
@click.argument("name")
@click.option("-o", "--output-dir", type=PATH, default=Path("."), show_default=True)
@client_options
def pull_command(name: str, output_dir: Path, progress: bool | None, **flags: object) -> None:
    """Download the newest trusted image kiln-image:NAME and its manifest.

    Resumable: an interrupted pull keeps its partial file, and the next pull of the same
    image fetches only what is missing; the sha512 is checked either way.
    """
    from kiln.images.store import StoreError, pull
    from kiln.shacache.client import CacheError

    client = _store_client(upload=False, progress=progress, **flags)
    try:
        path = pull(client, name, output_dir)
    except (StoreError, CacheError) as error:
        fail(str(error))
    click.echo(f"pulled {path} (verified against its manifest); boot it: kiln image boot {path}")


@image.command("export-ec2")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output-dir", type=PATH, default=Path("."), show_default=True)
@click.option("--bucket", required=True, help="The S3 bucket EC2 imports from.")
@click.option("--force", is_flag=True, help="Export an image baked without `ec2: true`.")
def export_ec2_command(image_path, output_dir, bucket, force) -> None:
    """Prepare IMAGE for EC2: the raw disk, and import-snapshot + register-image requests.

    kiln does not call AWS; run the printed commands with your own credentials.
    """
    from kiln.images.ec2 import ExportError, commands, export

    try:
        files = export(image_path, output_dir, bucket, require_ec2=not force)
    except ExportError as error:
        fail(str(error))
    for line in commands(files, bucket):
        click.echo(line)


@image.group("guest", hidden=True)
def guest() -> None:
    """Run inside a booted image by its systemd units."""


@guest.command("up")
@click.argument("name")
def guest_up(name: str) -> None:
    from kiln.images.guest import up_main

    up_main(name)


@guest.command("ready")
def guest_ready() -> None:
    from kiln.images.guest import ready_main

    ready_main()


@guest.command("credentials")
def guest_credentials() -> None:
    import json

    from kiln.images.guest import credentials

    click.echo(json.dumps(credentials()))
