"""The tutorial notebook, run unchanged in the release's own kernel against its instance.

The instance (built by the session's cold build) runs Wendelin and JupyterLab; the test puts a
WAV recording into stream ``tutorial.wav``, executes the notebook the instance placed in
JupyterLab's folder with nbclient, in an ipykernel started from the release's JupyterLab venv
(the interpreter JupyterLab gives its notebooks, so the kiln client, numpy, dask and matplotlib
are the release's pins, not the test venv's), then checks what the notebook saved against
numpy's FFT of the same samples, and that JupyterLab answers only with its token.
"""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import nbformat
import numpy as np
import pytest
import requests
from nbclient import NotebookClient

from kiln.common.addresses import free_ports
from kiln.software.build import BuildResult
from kiln.testing.releases import healthy_instance
from kiln.wendelin import client

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[3]
TUTORIAL = REPOSITORY / "kiln" / "wendelin" / "examples" / "tutorial.ipynb"
RATE = 16_000
WINDOW = 4096  # the notebook's


def recording(seconds: float = 3.0) -> tuple[np.ndarray, bytes]:
    """A two-channel 16-bit mix of sines (440 + 1000 Hz left, 300 Hz right) and its WAV file."""
    t = np.arange(int(RATE * seconds)) / RATE
    left = 8000 * np.sin(2 * np.pi * 440 * t) + 4000 * np.sin(2 * np.pi * 1000 * t)
    right = 6000 * np.sin(2 * np.pi * 300 * t)
    samples = np.stack([left, right], axis=1).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(2)
        audio.setsampwidth(2)
        audio.setframerate(RATE)
        audio.writeframes(samples.tobytes())
    return samples, buffer.getvalue()


def release_kernel(software_dir: Path, kernels: Path) -> str:
    """A kernelspec for the release's JupyterLab interpreter (ipykernel's own spec names
    plain ``python``, which jupyter_client would resolve to the test's interpreter)."""
    spec = kernels / "kernels" / "kiln-release"
    spec.mkdir(parents=True)
    python = software_dir / "parts" / "jupyterlab" / "bin" / "python"
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "kiln release", "language": "python"})
    )
    return "kiln-release"


def test_tutorial_runs_unchanged_and_saves_the_channel_spectrum_and_figure(
    wendelin_cold_build: BuildResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    software_dir = wendelin_cold_build.software_dir
    http_port, forward_port, jupyter_port = free_ports(3)
    parameters = {
        "http-port": str(http_port),
        "forward-port": str(forward_port),
        "jupyterlab-port": str(jupyter_port),
    }
    root = tmp_path / "instance"
    with healthy_instance(software_dir, root, parameters):
        connection = json.loads((root / "etc" / "wendelin-connection.json").read_text())
        assert connection["jupyterlab"] == f"http://127.0.0.1:{jupyter_port}/lab"
        policy = json.loads(Path(connection["credentials"]).read_text())
        ctx = client.connect(connection["url"], policy["user"], policy["password"])
        samples, wav = recording()
        ctx.upload("tutorial.wav", wav, "audio/wav")

        # The notebook JupyterLab shows is the repository's, byte for byte.
        placed = root / "srv" / "notebooks" / "tutorial.ipynb"
        assert placed.read_bytes() == TUTORIAL.read_bytes()
        notebook = nbformat.read(placed, as_version=4)
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
        monkeypatch.setenv("KILN_INSTANCE", str(root))  # as the instance's JupyterLab sets it
        kernel = release_kernel(software_dir, tmp_path / "jupyter")
        NotebookClient(
            notebook,
            kernel_name=kernel,
            timeout=180,
            resources={"metadata": {"path": str(tmp_path)}},
        ).execute()

        channel = ctx.arrays["tutorial.channel"]
        assert channel.attributes == {"rate": RATE, "channel": 0, "stream": "tutorial.wav"}
        np.testing.assert_array_equal(channel.to_dask().compute(), samples[:, 0])

        windows = len(samples) // WINDOW
        left = samples[: windows * WINDOW, 0].astype("float64").reshape(windows, WINDOW)
        expected = np.abs(np.fft.rfft(left, axis=1))
        spectrum = ctx.arrays["tutorial.spectrum"]
        assert spectrum.shape == expected.shape
        np.testing.assert_allclose(spectrum.to_dask().compute(), expected, rtol=1e-9, atol=1e-6)

        figures = [n for n in ctx.streams.names() if n.startswith("tutorial.spectrum.")]
        assert len(figures) == 1 and figures[0].endswith(".png")
        assert ctx.streams[figures[0]].read(0, 8) == b"\x89PNG\r\n\x1a\n"
        outputs = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
        assert "strongest frequencies" in outputs

        check_jupyterlab_token(root, connection, jupyter_port)


def check_jupyterlab_token(root: Path, connection: dict, port: int) -> None:
    """JupyterLab answers with the generated token only; the token is in no argv nor log."""
    token_file = Path(connection["jupyterlab-token"])
    assert token_file.stat().st_mode & 0o077 == 0
    token = token_file.read_text()
    assert len(token) >= 32
    status = f"http://127.0.0.1:{port}/api/status"
    with_token = requests.get(status, headers={"Authorization": f"token {token}"}, timeout=10)
    assert with_token.status_code == 200, with_token.text
    assert requests.get(status, timeout=10).status_code == 403
    wrong = requests.get(status, headers={"Authorization": "token wrong"}, timeout=10)
    assert wrong.status_code == 403
    lab = requests.get(connection["jupyterlab"], params={"token": token}, timeout=10)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    without = requests.get(connection["jupyterlab"], timeout=10, allow_redirects=False)
    assert without.status_code in (302, 403)  # to the login page, never the lab
    if without.status_code == 302:
        assert "/login" in without.headers["Location"]

    for status_file in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert token not in status_file.read_text(errors="replace")
        except OSError:
            continue  # the process ended while we looked
    for log in [*(root / "var" / "log").iterdir(), root / "etc" / "supervisord.conf"]:
        assert token not in log.read_text(errors="replace"), log
    assert "token=..." in (root / "var" / "log" / "jupyterlab.log").read_text()
