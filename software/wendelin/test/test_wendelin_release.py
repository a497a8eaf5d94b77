"""software/wendelin: cold build through the cache, warm build, instance, checkSoftware."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner

from kiln.common.addresses import free_ports
from kiln.software.build import BuildResult, build_release
from kiln.software.cli import instance as instance_command
from kiln.software.instance import Instance
from kiln.testing.releases import (
    CacheFixture,
    assert_software_links_sanely,
    build_snapshot_release,
    healthy_instance,
)

pytestmark = pytest.mark.slow

PARTS = (
    "python3",
    "zstd",
    "supervisor",
    "kiln",
    "dygraphs",
    "jupyterlab",
    "instance-base",
    "instance-profile",
)
CHECKED = {"python3": "no-files"}


@pytest.fixture(scope="module")
def warm_build(
    wendelin_cold_build: BuildResult,
    release_cache: CacheFixture,
    source_snapshot: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> BuildResult:
    """A second build into a fresh directory, without upload rights."""
    return build_snapshot_release(
        source_snapshot,
        "wendelin",
        tmp_path_factory.mktemp("wendelin-warm"),
        release_cache.config(),
    )


def outcomes(result: BuildResult) -> dict[str, str]:
    return {name: part["outcome"] for name, part in result.parts.items()}


def test_cold_build_compiles_and_uploads_every_part(wendelin_cold_build: BuildResult) -> None:
    # python3 is the machine's, checked: it installs no file, so nothing is cached for it.
    assert outcomes(wendelin_cold_build) == {**dict.fromkeys(PARTS, "uploaded"), **CHECKED}
    zstd = wendelin_cold_build.software_dir / "parts" / "zstd" / "bin" / "zstd"
    assert "v1.5.4" in subprocess.run([zstd, "--version"], capture_output=True, text=True).stdout
    report = json.loads((wendelin_cold_build.software_dir / ".kiln-binary-cache.json").read_text())
    # The zstd tarball came from the seeded cache (file-urlmd5 key), not from the network.
    assert any("libzstd_1.5.4+dfsg2.orig.tar.xz: from cache" in e for e in report["sources"])
    # dygraphs from npm, seeded likewise, and the files the service serves from the part.
    assert any("npm:dygraphs@2.2.2: from cache" in e for e in report["sources"])
    dist = wendelin_cold_build.software_dir / "parts" / "dygraphs" / "dist"
    assert (dist / "dygraph.min.js").stat().st_size > 100_000


def test_warm_build_in_a_fresh_directory_hits_every_part(
    wendelin_cold_build: BuildResult, warm_build: BuildResult
) -> None:
    assert outcomes(warm_build) == {**dict.fromkeys(PARTS, "hit"), **CHECKED}
    assert warm_build.seconds < 60
    assert warm_build.seconds < 0.25 * wendelin_cold_build.seconds
    # Relocated: the programs run from the new directory.
    kiln = warm_build.software_dir / "parts" / "kiln" / "bin" / "kiln"
    assert str(warm_build.software_dir) in kiln.read_text().splitlines()[0]
    subprocess.run([kiln, "wendelin", "--help"], check=True, capture_output=True)
    instance_cfg = (warm_build.software_dir / "instance.cfg").read_text()
    assert str(wendelin_cold_build.software_dir) not in instance_cfg


def test_software_links_only_allowed_libraries(
    wendelin_cold_build: BuildResult, warm_build: BuildResult
) -> None:
    assert assert_software_links_sanely(wendelin_cold_build.software_dir) > 5
    assert assert_software_links_sanely(warm_build.software_dir) > 5


def test_leaf_option_change_rebuilds_only_that_part_and_dependents(
    wendelin_cold_build: BuildResult,
    release_cache: CacheFixture,
    source_snapshot: Path,
    tmp_path: Path,
) -> None:
    result = build_release(
        source_snapshot / "software" / "wendelin",
        tmp_path / "software",
        release_cache.config(),
        options={"zstd:optimisation": "-O1"},
        quiet=True,
    )
    assert outcomes(result) == {
        "python3": "no-files",
        "zstd": "built",
        "supervisor": "hit",
        "kiln": "hit",
        "dygraphs": "hit",
        "jupyterlab": "hit",
        "instance-base": "hit",
        "instance-profile": "built",  # renders ${zstd:location}
    }


def ingest(url: str, policy: dict, tag: str, records: list[dict]) -> int:
    body = b"".join(msgpack.packb([1700000000 + i, r]) for i, r in enumerate(records))
    token = base64.b64encode(f"{policy['user']}:{policy['password']}".encode()).decode()
    request = urllib.request.Request(
        f"{url}/ingestion_policies/default/ingest?reference={tag}",
        data=body,
        method="POST",
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def test_instance_serves_ingest_with_generated_credentials_and_is_idempotent(
    warm_build: BuildResult, tmp_path: Path
) -> None:
    http_port, forward_port = free_ports(2)
    parameters = {
        "http-port": str(http_port),
        "forward-port": str(forward_port),
        "jupyterlab": "off",  # on: test_tutorial_notebook.py
    }
    root = tmp_path / "instance"
    with healthy_instance(warm_build.software_dir, root, parameters) as run:
        assert "jupyterlab" not in (root / "etc" / "supervisord.conf").read_text()
        connection = json.loads((root / "etc" / "wendelin-connection.json").read_text())
        assert connection["jupyterlab"] is None
        credentials_file = root / "etc" / "wendelin-default-policy.json"
        assert credentials_file.stat().st_mode & 0o077 == 0
        policy = json.loads(credentials_file.read_text())
        assert policy["password"]
        assert ingest(f"http://127.0.0.1:{http_port}", policy, "sensor.a", [{"v": 1}]) == 204
        # The pages' charts: dygraphs from the release's part (--dygraphs), our script from the
        # installed package's data.
        dist = warm_build.software_dir / "parts" / "dygraphs" / "dist"
        for path, expected in (
            ("/static/dygraphs/dygraph.min.js", (dist / "dygraph.min.js").read_bytes()),
            ("/static/charts.js", None),
        ):
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}") as answer:
                body = answer.read()
            assert body == expected if expected else b"Dygraph" in body

        pid_before = (root / "var" / "run" / "supervisord.pid").read_text()
        again = CliRunner().invoke(
            instance_command,
            ["up", "wendelin", "--software-dir", str(warm_build.software_dir)]
            + ["--root", str(root), "--timeout", "30"]
            + [f"--param={name}={value}" for name, value in parameters.items()],
        )
        assert again.exit_code == 0, again.output
        assert "credentials kept from the previous request" in again.output
        assert "generated" not in again.output
        assert (root / "var" / "run" / "supervisord.pid").read_text() == pid_before
        assert json.loads(credentials_file.read_text()) == policy
    assert run.stopped
    assert not Instance(root).healthy()
