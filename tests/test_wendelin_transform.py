"""Transformations in a real `kiln wendelin serve`: kill -9 in the middle, restart, and the
arrays equal one numpy computation over the whole input; and the same work on a real
``dask.distributed`` cluster of two worker processes."""

import time

import numpy as np
import pytest
import requests

from kiln.testing.audio import samples, wav_bytes
from kiln.testing.wendelin import ServerProcess, add_policy, cli
from kiln.wendelin.arrays.store import ArrayStore
from kiln.wendelin.transform import spectrum

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WINDOW, HOP = 128, 120


def upload(server: ServerProcess, auth: tuple[str, str], name: str, data: bytes) -> None:
    """The header and a torn first piece by PUT, the rest appended in pieces."""
    url = f"{server.url}/api/streams/{name}"
    requests.put(url, data=data[:1001], auth=auth, timeout=30).raise_for_status()
    for start in range(1001, len(data), 1 << 20):
        piece = data[start : start + (1 << 20)]
        requests.post(f"{url}/append", data=piece, auth=auth, timeout=30).raise_for_status()


def transforms(server: ServerProcess, auth: tuple[str, str]) -> dict[str, dict]:
    answer = requests.get(f"{server.url}/api/transforms", auth=auth, timeout=10)
    answer.raise_for_status()
    return {status["output"]: status for status in answer.json()}


def wait_caught_up(server: ServerProcess, auth, outputs: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = transforms(server, auth)
        failed = [status for status in found.values() if status["state"] == "failed"]
        assert not failed, failed
        if outputs <= set(found) and all(
            found[name]["state"] == "caught up" and found[name]["stream_size"] > 0
            for name in outputs
        ):
            return found
        time.sleep(0.2)
    raise AssertionError(f"not caught up after {timeout} s: {transforms(server, auth)}")


def check_arrays(root: str, frames: np.ndarray) -> None:
    arrays = ArrayStore(f"{root}/arrays")
    np.testing.assert_array_equal(arrays.open("audio.mic.pcm")[:], frames)
    np.testing.assert_array_equal(arrays.open("mic.spectrum.channel")[:], frames[:, 1])
    expected = spectrum.reference(frames[:, 1], WINDOW, HOP, "hann")
    got = arrays.open("mic.spectrum")[:]
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)  # exactly equal rows: none repeated, none skipped


def declare(root: str) -> dict[str, str]:
    credentials = add_policy(root, "audio", "--tag-pattern", "audio.**")
    cli("policy", "transform", "add", "--root", root, "audio", "--stream-pattern", "audio.*",
        "--kind", "wav-pcm")  # fmt: skip
    cli("transform", "run", "--root", root, "audio.mic", "--kind", "wav-spectrum",
        "--output", "mic.spectrum", "--channel", "1",
        "--window", str(WINDOW), "--hop", str(HOP))  # fmt: skip
    return credentials


def test_kill_9_mid_transformation_then_restart_is_exactly_once(tmp_path) -> None:
    root = str(tmp_path / "root")
    credentials = declare(root)
    auth = (credentials["user"], credentials["password"])
    frames = samples(700_000, channels=2)  # 2.8 MB of samples, 1 MiB per step
    server = ServerProcess(root, "--transform-batch-mib", "1").start()
    kills = 0
    try:
        upload(server, auth, "audio.mic", wav_bytes(frames, streaming=True))
        # Kill -9 while the transformations are part way, twice, at different points.
        for fraction in (0.25, 0.6):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = transforms(server, auth).get("mic.spectrum")
                if (
                    status
                    and status["stream_size"]
                    and (status["consumed"] >= fraction * status["stream_size"])
                ):
                    break
                time.sleep(0.02)
            progress = transforms(server, auth)["mic.spectrum"]
            server.kill()
            kills += 1
            assert progress["consumed"] < progress["stream_size"], "finished before the kill"
            server.start()
        found = wait_caught_up(server, auth, {"audio.mic.pcm", "mic.spectrum"}, 120)
        assert found["audio.mic.pcm"]["origin"] == "policy:audio"
        status = cli("status", "--root", root)
        assert "mic.spectrum\tcaught up\taudio.mic (wav-spectrum)" in status
        page = requests.get(server.url + "/", auth=auth, timeout=10).text
        assert "<h2>Transformations</h2>" in page and "mic.spectrum.channel" in page
    finally:
        server.stop()
    assert kills == 2
    check_arrays(root, frames)


def test_a_transformation_on_a_distributed_cluster_of_two_worker_processes(tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    root = str(tmp_path / "root")
    credentials = declare(root)
    auth = (credentials["user"], credentials["password"])
    frames = samples(300_000, channels=2)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        server = ServerProcess(root, "--dask-scheduler", cluster.scheduler_address).start()
        try:
            upload(server, auth, "audio.mic", wav_bytes(frames))
            wait_caught_up(server, auth, {"audio.mic.pcm", "mic.spectrum"}, 120)
            assert "Dask on tcp://127.0.0.1:" in cli("status", "--root", root)
        finally:
            server.stop()
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert len(executed) == 2
        assert all(count > 0 for count in executed.values()), executed  # both did FFTs
    check_arrays(root, frames)
