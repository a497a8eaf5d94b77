"""`kiln image build`: a template becomes images, through diskimage-builder and the caches.

1. The payload for the chroot: a wheelhouse of kiln and its dependencies (built here with this
   machine's pip configuration, so the chroot needs no package index), the checkout's profiles,
   the image description (image.json) and the cache keys.
2. The layer: looked up in the cache by its inputs; restored as DIB's debootstrap tarball, or
   saved by the kiln-layer element and uploaded after the bake.
3. disk-image-create with DIB's elements and kiln's (images/elements), progress per phase.
   Inside, every release is built with `kiln software build` through the cache.
4. The manifest beside the images.  Then `kiln image test` unless told not to.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kiln.images import dib, layer, manifest
from kiln.images.mirrors import machine_mirrors
from kiln.images.template import Template
from kiln.shacache.config import CacheConfig, networkcache_lines
from kiln.software.build import publishes

# DIB's own elements every image uses (kiln's are added from images/elements).
DIB_ELEMENTS = ["debian-minimal", "vm", "block-device-mbr", "cloud-init-datasources"]
KILN_ELEMENTS = ["kiln-base", "kiln-layer", "kiln-releases"]


class BakeError(Exception):
    pass


def repository_root() -> Path:
    return Path(__file__).resolve().parents[2]


def elements_dir() -> Path:
    return repository_root() / "images" / "elements"


# Where the payload appears inside the chroot (extra-data.d/50-kiln-payload copies it there).
CHROOT_PAYLOAD = Path("/tmp/in_target.d/kiln-payload")
# The settings that name files on this machine: copied into the payload for the chroot's build.
CACHE_FILES = (
    "signing_key_file",
    "legacy_signing_key_file",
    "client_cert_file",
    "client_key_file",
    "ca_file",
)


def chroot_cache_config(cache: CacheConfig, payload: Path) -> CacheConfig:
    """The configuration of the releases' build inside the chroot: the same cache, its files
    copied into ``payload`` (0600) and named by their chroot path; upload URLs only when the
    bake publishes, so that a read-only bake hands the chroot no credential."""
    changes: dict[str, object] = {}
    uploads = publishes(cache)
    for name in CACHE_FILES:
        path = getattr(cache, name)
        if path is None:
            continue
        if not uploads and name != "ca_file":  # keys and client certificates are for uploads
            changes[name] = None
            continue
        target = payload / "cache-files" / name
        target.parent.mkdir(mode=0o700, exist_ok=True)
        shutil.copyfile(path, target)
        target.chmod(0o600)
        changes[name] = CHROOT_PAYLOAD / "cache-files" / name
    if not uploads:
        changes.update(upload_cache_url=None, upload_dir_url=None)
    return replace(cache, **changes)


@dataclass
class BakeResult:
    images: list[Path]
    manifest_path: Path
    manifest: dict
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    layer_restored: bool = False


def image_description(template: Template) -> dict:
    """/etc/kiln/image.json: what the guest needs at boot (no secret in it)."""
    return {
        "name": template.name,
        "releases": template.releases,
        "instances": [
            {
                "name": i.name,
                "release": i.release,
                "parameters": i.parameters,
                "ports": i.ports,
                # Explicit: JSON writers may sort keys, and the first port is the main one.
                "main_port": i.main_port,
            }
            for i in template.instances
        ],
        "status_port": template.firstboot.status_port,
        "ready_timeout": template.firstboot.ready_timeout,
    }


def release_pins(root: Path) -> list[str]:
    """`name==version` for what the releases' kiln:venv parts install ([python-versions])."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(root / "stack" / "kiln" / "versions.cfg")
    return [f"{name}=={version}" for name, version in parser.items("python-versions")]


def _pip_wheel(dest: Path, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(dest), *args],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BakeError(f"pip wheel {' '.join(args)[:200]} failed:\n{result.stderr[-3000:]}")


def wheelhouse(dest: Path, source: Path, progress: Callable[[str], None]) -> None:
    """Wheels of kiln, its dependencies and the releases' pinned packages, made here with this
    machine's pip configuration: inside the image, pip installs from them with no index (the
    chroot has no route to this machine's mirror, nor its CA certificates)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiln" / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("kiln-*.whl"):
        old.unlink()  # always this checkout's kiln
    started = time.monotonic()
    # From the snapshot, not the checkout: building writes build/ beside the sources, removed
    # here so that the image's copy is the checkout's.
    _pip_wheel(cache, str(source))
    shutil.rmtree(source / "build", ignore_errors=True)
    for info in source.glob("*.egg-info"):
        shutil.rmtree(info)
    pins = release_pins(repository_root())
    missing = [p for p in pins if not list(cache.glob(_wheel_glob(p)))]
    if missing:
        _pip_wheel(cache, "--no-deps", *missing)
    shutil.copytree(cache, dest)
    count = len(list(dest.glob("*.whl")))
    progress(f"wheelhouse: {count} wheels in {time.monotonic() - started:.0f} s")


def _wheel_glob(pin: str) -> str:
    name, _, version = pin.partition("==")
    return f"{name.replace('-', '_').replace('.', '_')}-{version}-*.whl"


def prepare_payload(template: Template, workdir: Path, cache: CacheConfig | None, progress) -> Path:
    from kiln.testing.releases import snapshot_repository  # what a release build reads

    payload = workdir / "payload"
    shutil.rmtree(payload, ignore_errors=True)
    payload.mkdir(parents=True)
    snapshot_repository(payload / "src")
    wheelhouse(payload / "wheelhouse", payload / "src", progress)
    (payload / "image.json").write_text(json.dumps(image_description(template), indent=2))
    if cache:
        # `kiln software build --config` reads it in the chroot.  It may hold upload
        # credentials and keys: only in DIB's hooks folder (never in the image), mode 0600,
        # and removed from the work directory after the bake.
        config = payload / "networkcache.cfg"
        config.touch(mode=0o600)
        lines = networkcache_lines(chroot_cache_config(cache, payload))
        config.write_text("\n".join(["[networkcache]", *lines]) + "\n")
    return payload


def template_element(template: Template, workdir: Path) -> Path:
    """A generated element with the template's packages in its package-installs.yaml."""
    root = workdir / "elements"
    element = root / "kiln-template"
    shutil.rmtree(root, ignore_errors=True)
    element.mkdir(parents=True)
    (element / "element-deps").write_text("package-installs\n")
    lines = ["# Generated from the template's `packages`."]
    lines += [f"{package}:" for package in template.packages]
    (element / "package-installs.yaml").write_text("\n".join(lines) + "\n")
    return root


def layer_inputs(
    template: Template, elements: list[str], paths: list[Path], mirrors
) -> layer.LayerInputs:
    from diskimage_builder.version import version_info

    element_dirs = [p / e for e in elements for p in paths if (p / e).is_dir()]
    suites = {f"{template.source.release}": mirrors.main}
    if mirrors.security:
        suites[f"{template.source.release}-security"] = mirrors.security
    return layer.LayerInputs(
        release=template.source.release,
        architecture=template.source.architecture,
        packages=layer.package_list(element_dirs),
        elements=layer.element_digests(elements, paths),
        dib_version=version_info.version_string(),
        mirror_releases={s: layer.release_file_digest(m, s) for s, m in suites.items()},
    )


def bake(
    template: Template,
    output_dir: Path,
    cache: CacheConfig | None = None,
    progress: Callable[[str], None] = print,
) -> BakeResult:
    """Bake ``template`` into ``output_dir``; ``cache`` (parsed by the cache's one parser)
    gives the layer and every release's parts, and takes what is built when it publishes."""
    if cache is not None and not cache.names_a_cache:
        cache = None
    try:
        return _bake(template, output_dir, cache, progress)
    finally:
        # Keys and credentials copied for the chroot leave no copy behind, failed bake or not.
        workdir = output_dir.resolve() / f".{template.name}.work"
        shutil.rmtree(workdir / "payload" / "cache-files", ignore_errors=True)
        (workdir / "payload" / "networkcache.cfg").unlink(missing_ok=True)


def _bake(
    template: Template,
    output_dir: Path,
    cache: CacheConfig | None,
    progress: Callable[[str], None],
) -> BakeResult:
    started = time.monotonic()
    output_dir = output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    workdir = output_dir / f".{template.name}.work"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    phases: dict[str, float] = {}

    source = template.source
    mirrors = machine_mirrors(source.release)
    if source.mirror:
        mirrors = type(mirrors)(source.mirror, source.security_mirror or mirrors.security)
    progress(f"mirror: {mirrors.main} (security: {mirrors.security or 'none'})")

    payload = prepare_payload(template, workdir, cache, progress)
    phases["payload"] = time.monotonic() - started
    generated = template_element(template, workdir)
    paths = [elements_dir(), generated, dib.dib_elements_dir()]
    elements = [*DIB_ELEMENTS, *KILN_ELEMENTS, "kiln-template"]
    if template.ec2:
        elements.append("kiln-ec2")

    inputs = layer_inputs(template, elements, paths, mirrors)
    layer_key = inputs.key()
    dib_cache = workdir / "dib-cache"
    dib_cache.mkdir()
    env: dict[str, str] = {
        "DIB_RELEASE": source.release,
        "DIB_DISTRIBUTION_MIRROR": mirrors.main,
        "DIB_DEBIAN_COMPONENTS": "main",
        "DIB_CLOUD_INIT_DATASOURCES": "Ec2" if template.ec2 else "NoCloud",
        "DIB_IMAGE_CACHE": str(dib_cache),
        "DIB_IMAGE_EXTRA_SIZE": "1536",  # MB over the content: room for the instances' data
        "DIB_GRUB_TIMEOUT": "0",  # no boot menu wait: boot time is tested
        "DIB_GRUB_TIMEOUT_STYLE": "hidden",
        # GRUB's own serial terminal stalls under qemu's TCG here; the kernel still logs to
        # the serial console (and the readiness line goes there).
        "DIB_BOOTLOADER_USE_SERIAL_CONSOLE": "False",
        "DIB_BOOTLOADER_DEFAULT_CMDLINE": "nofb nomodeset gfxpayload=text console=tty0 "
        "console=ttyS0,115200",
        "KILN_PAYLOAD": str(payload),
        "KILN_REPORT_DIR": str(workdir / "report"),
    }
    if mirrors.security:
        env["DIB_DEBIAN_SECURITY_MIRROR"] = mirrors.security
    if template.disk_size_mb:
        env["DIB_IMAGE_SIZE"] = f"{template.disk_size_mb / 1024:.3f}"  # GB
        env.pop("DIB_IMAGE_EXTRA_SIZE")

    restored = False
    layer_entry = None
    if cache:
        from kiln.shacache.client import CacheClient

        client = CacheClient.from_config(cache)
        layer_entry = layer.find_layer(client, layer_key, source.architecture)
        if layer_entry:
            t = time.monotonic()
            tarball = (
                dib_cache / f"debootstrap-debian-{source.release}-{source.architecture}.tar.gz"
            )
            client.download(layer_entry["sha512"], tarball)
            env["DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE"] = "1"
            restored = True
            phases["layer-restore"] = time.monotonic() - t
            seconds = phases["layer-restore"]
            progress(f"layer {layer_key[-12:]}: restored from the cache ({seconds:.0f} s)")
        else:
            progress(f"layer {layer_key[-12:]}: not in the cache; saving it during this bake")
    saved = workdir / "layer.tar.gz"
    if not restored:
        env["KILN_LAYER_SAVE"] = str(saved)

    output = output_dir / template.name
    for suffix in template.outputs:
        (output_dir / f"{template.name}.{suffix}").unlink(missing_ok=True)
    run = dib.DibRun(
        elements=elements,
        output=output,
        types=template.outputs,
        elements_path=paths[:2],
        environment=env,
        architecture=source.architecture,
        log_path=output_dir / f"{template.name}.build.log",
    )
    t = time.monotonic()
    try:
        run.run(progress)
    except dib.DibError as error:
        raise BakeError(str(error)) from None
    phases["disk-image-create"] = time.monotonic() - t

    layer_info: dict = {"key": layer_key, "restored": restored, "inputs": inputs.__dict__}
    if saved.exists() and cache and publishes(cache):
        t = time.monotonic()
        sha512 = client.upload(
            saved,
            layer_key,
            {"architecture": source.architecture, "release": source.release, "kind": "kiln-layer"},
        )
        layer_info["sha512"] = sha512
        phases["layer-upload"] = time.monotonic() - t
        progress(f"layer {layer_key[-12:]}: uploaded {saved.stat().st_size / 1e6:.0f} MB")
    elif layer_entry:
        layer_info["sha512"] = layer_entry["sha512"]
    saved.unlink(missing_ok=True)

    images = [output_dir / f"{template.name}.{suffix}" for suffix in template.outputs]
    missing = [str(p) for p in images if not p.exists()]
    if missing:
        raise BakeError(f"disk-image-create did not write {', '.join(missing)}; see {run.log_path}")
    from diskimage_builder.version import version_info

    data = manifest.build_manifest(
        template_name=template.name,
        template_digest=template.digest(),
        report_dir=workdir / "report",
        outputs=images,
        layer=layer_info,
        extra={
            "source": {
                "release": source.release,
                "architecture": source.architecture,
                "mirror": mirrors.main,
                "security_mirror": mirrors.security,
            },
            "diskimage_builder": version_info.version_string(),
            "elements": elements,
            "ec2": template.ec2,
            "image": image_description(template),
            "tests": [{"check": t.check, "instance": t.instance} for t in template.tests],
        },
    )
    manifest_path = manifest.write_manifest(images[0], data)
    shutil.rmtree(workdir, ignore_errors=True)
    return BakeResult(images, manifest_path, data, time.monotonic() - started, phases, restored)
