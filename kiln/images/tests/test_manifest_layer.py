"""Manifests, layer keys and the machine's mirrors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.images import layer, manifest
from kiln.images.mirrors import MirrorError, machine_mirrors, parse_deb822

pytestmark = pytest.mark.unit


def inputs(**changes) -> layer.LayerInputs:
    values = {
        "release": "bookworm",
        "architecture": "amd64",
        "packages": ("cloud-init", "python3"),
        "elements": {"kiln-base": "aa"},
        "dib_version": "3.43.0",
        "mirror_releases": {"bookworm": "r1"},
    }
    values.update(changes)
    return layer.LayerInputs(**values)


def test_layer_key_is_stable_and_covers_every_input():
    key = inputs().key()
    assert key.startswith("kiln-layer:") and key == inputs().key()
    changed = [
        inputs(release="trixie"),
        inputs(packages=("cloud-init", "python3", "curl")),
        inputs(elements={"kiln-base": "ab"}),
        inputs(dib_version="3.44.0"),
        inputs(mirror_releases={"bookworm": "r2"}),
    ]
    assert len({key, *(i.key() for i in changed)}) == 6


def test_element_digest_sees_content_and_modes(tmp_path):
    element = tmp_path / "kiln-x"
    (element / "install.d").mkdir(parents=True)
    script = element / "install.d" / "10-x"
    script.write_text("echo 1\n")
    first = layer.tree_digest(element)
    script.chmod(0o755)
    second = layer.tree_digest(element)
    script.write_text("echo 2\n")
    assert len({first, second, layer.tree_digest(element)}) == 3
    # Elements whose hooks run after the layer is saved do not shape it.
    (tmp_path / "kiln-releases").mkdir()
    digests = layer.element_digests(["kiln-x", "kiln-releases", "absent"], [tmp_path])
    assert set(digests) == {"kiln-x"}


def test_elements_said_to_run_after_the_layer_do(tmp_path):
    """Their hooks before install.d, or in install.d before the save, would shape the layer."""
    from kiln.images.bake import elements_dir

    save = "10-kiln-layer-save"
    assert (elements_dir() / "kiln-layer" / "install.d" / save).is_file()
    # kiln-releases' extra-data.d copies its payload into DIB's hooks folder, not the root.
    early = {"root.d", "extra-data.d", "pre-install.d"}
    allowed = {"kiln-releases": {"extra-data.d"}}
    for name in layer.AFTER_LAYER:
        element = elements_dir() / name
        assert not (element / "package-installs.yaml").exists(), name
        phases = {d.name for d in element.iterdir() if d.is_dir()}
        assert not (phases & early) - allowed.get(name, set()), (name, phases)
        hooks = [p.name for p in (element / "install.d").iterdir()]
        assert hooks and all(hook > save for hook in hooks), (name, hooks)


def test_package_list_reads_every_package_installs(tmp_path):
    for name, text in (("a", "python3:\ncurl:\n"), ("b", "# none\n"), ("c", "curl:\nvim:\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "package-installs.yaml").write_text(text)
    assert layer.package_list(tmp_path / n for n in "abc") == ("curl", "python3", "vim")


def test_manifest_lists_packages_parts_and_output_hashes(tmp_path):
    report = tmp_path / "report"
    (report / "parts").mkdir(parents=True)
    (report / "packages.tsv").write_text("python3\t3.11.2-1\tamd64\nzlib1g\t1:1.2\tamd64\n")
    parts = {"parts": {"zstd": {"signature": "s1", "outcome": "hit", "seconds": 0.2}}}
    (report / "parts" / "wendelin.json").write_text(json.dumps(parts))
    image = tmp_path / "x.qcow2"
    image.write_bytes(b"disk")
    data = manifest.build_manifest(
        template_name="x",
        template_digest="t",
        report_dir=report,
        outputs=[image],
        layer={"key": "k"},
        extra={},
    )
    assert data["packages"] == {"python3": "3.11.2-1", "zlib1g": "1:1.2"}
    assert data["parts"] == {"wendelin": {"zstd": {"signature": "s1", "outcome": "hit"}}}
    assert data["outputs"]["x.qcow2"]["sha512"] == manifest.sha512_file(image)
    path = manifest.write_manifest(image, data)
    assert path == tmp_path / "x.manifest.json"
    # Same inputs, other outcome (restored instead of built): the same identity.
    again = json.loads(json.dumps(data))
    again["parts"]["wendelin"]["zstd"]["outcome"] = "uploaded"
    again["outputs"] = {}
    assert manifest.identity(again) == manifest.identity(data)


def test_mirrors_come_from_deb822_sources(tmp_path):
    (tmp_path / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.test/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://security.test/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    mirrors = machine_mirrors("bookworm", tmp_path, tmp_path / "sources.list")
    assert mirrors.main == "http://mirror.test/debian"
    assert mirrors.security == "http://security.test/debian-security"
    with pytest.raises(MirrorError, match=r"give source\.mirror"):
        machine_mirrors("trixie", tmp_path, tmp_path / "sources.list")


def test_deb822_continuation_lines():
    stanzas = parse_deb822("Types: deb\nSigned-By:\n  -----BEGIN\n  x\nURIs: http://a\n")
    assert stanzas[0]["uris"] == "http://a"
    assert stanzas[0]["signed-by"].startswith("-----BEGIN")


def test_one_line_sources_list(tmp_path):
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://old.test/debian bookworm main\n"
    )
    assert machine_mirrors("bookworm", tmp_path, tmp_path / "sources.list").main == (
        "http://old.test/debian"
    )


def test_manifest_path_is_beside_the_image():
    assert manifest.manifest_path(Path("/o/app.raw")) == Path("/o/app.manifest.json")
