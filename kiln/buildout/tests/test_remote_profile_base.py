"""${:_profile_base_location_} of a profile extended over HTTP: a real build.

The SlapOS-style chain is served by a real HTTP server on 127.0.0.1; a local release extends
its software.cfg by URL.  Every component is then read over HTTP, and each
``${:_profile_base_location_}`` (libb's patch, each source tarball) must become the URL of
the directory of the remote profile that wrote it, which buildout's downloads then fetch.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kiln.software.build import build_release
from kiln.testing.slapos_chain import PARTS, copy_chain

pytestmark = pytest.mark.slow


class _RecordingHandler(SimpleHTTPRequestHandler):
    """Serves a directory and records the paths asked for (quietly)."""

    requested: list[str]

    def log_message(self, format: str, *args: object) -> None:
        self.requested.append(self.path)


@pytest.fixture
def served_chain(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """The chain's profile tree over HTTP: (URL of its release profile, paths requested so
    far)."""
    release = copy_chain(tmp_path / "served")
    root = release.parent.parent
    requested: list[str] = []
    handler = type("Handler", (_RecordingHandler,), {"requested": requested})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        profile = (release / "software.cfg").relative_to(root).as_posix()
        yield f"http://127.0.0.1:{server.server_address[1]}/{profile}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_release_extending_a_remote_profile_fetches_files_next_to_it(
    served_chain: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, requested = served_chain
    release = tmp_path / "local" / "release"
    release.mkdir(parents=True)
    (release / "software.cfg").write_text(f"[buildout]\nextends = {url}\n")
    result = build_release(
        release, tmp_path / "software", None, quiet=True, shared_dir=tmp_path / "shared"
    )
    assert {name: part["outcome"] for name, part in result.parts.items()} == dict.fromkeys(
        PARTS, "built"
    )
    # The patch came from next to libb's remote profile, and was applied.
    assert "/component/libb/libb-greeting.patch" in requested
    assert "/component/liba/liba-1.0.tar.gz" in requested
    hello = result.software_dir / "bin" / "hello"
    output = subprocess.run([hello], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "greetings from kiln"
