"""The data arrays' HTTP API against a real `kiln wendelin serve`: reads, writes, bad input."""

import io
import json
import re

import numpy as np
import pytest
import requests

from kiln.testing.wendelin import ServerProcess, add_policy, cli

pytestmark = pytest.mark.integration


def npy(values: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, values, allow_pickle=False)
    return out.getvalue()


def from_npy(body: bytes) -> np.ndarray:
    return np.load(io.BytesIO(body), allow_pickle=False)


class Site:
    def __init__(self, server: ServerProcess, audio: dict, other: dict, reader: tuple) -> None:
        self.server, self.reader = server, reader
        self.audio = (audio["user"], audio["password"])
        self.other = (other["user"], other["password"])

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"

    def put(self, name: str, values: np.ndarray, auth=None, **params) -> requests.Response:
        return requests.put(
            self.url(f"/api/arrays/{name}"),
            data=npy(values),
            params=params,
            auth=auth or self.audio,
            headers={"Content-Type": "application/x-npy"},
        )

    def append(self, name: str, body: bytes, auth=None, **headers) -> requests.Response:
        return requests.post(
            self.url(f"/api/arrays/{name}/append"),
            data=body,
            auth=auth or self.audio,
            headers={"Content-Type": "application/x-npy", **headers},
        )

    def get(self, path: str, auth=None, **params) -> requests.Response:
        return requests.get(self.url(path), params=params, auth=auth or self.reader)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("wendelin"))
    audio = add_policy(root, "audio", "--tag-pattern", "audio.**")
    other = add_policy(root, "other", "--tag-pattern", "other.**")
    password = re.search(r"password:\s+(\S+)", cli("reader", "add", "--root", root, "analyst"))
    server = ServerProcess(
        root,
        "--max-slice-mib",
        "1",
        "--max-json-values",
        "1000",
        "--max-window-buckets",
        "500",
        "--max-array-upload-mib",
        "1",
    ).start()
    yield Site(server, audio, other, ("analyst", password.group(1)))
    assert server.stop() == 0, server.log()


def test_put_append_read_slices_and_windows(site):
    values = np.arange(-5000, 5000, dtype="<i2").reshape(5000, 2)
    created = site.put("pcm", values[:3000], attributes=json.dumps({"rate": 8000}))
    assert created.status_code == 201, created.text
    assert created.json() == {
        "name": "pcm",
        "policy": "audio",
        "dtype": "<i2",
        "shape": [3000, 2],
        "chunks": created.json()["chunks"],
        "attributes": {"rate": 8000},
        "source": None,
    }
    assert site.append("pcm", npy(values[3000:])).status_code == 204
    assert site.get("/api/arrays/pcm").json()["shape"] == [5000, 2]
    assert [a["name"] for a in site.get("/api/arrays").json()] == ["pcm"]
    whole = site.get("/api/arrays/pcm/data")
    assert whole.headers["Content-Type"] == "application/x-npy"
    assert np.array_equal(from_npy(whole.content), values)
    part = site.get("/api/arrays/pcm/data", slice="10:20,1")
    assert np.array_equal(from_npy(part.content), values[10:20, 1])
    as_json = site.get("/api/arrays/pcm/data", slice="0:4:2,:", format="json").json()
    assert as_json == {"shape": [2, 2], "dtype": "<i2", "data": values[0:4:2].tolist()}
    window = site.get("/api/arrays/pcm/window", buckets=50, column=1).json()
    assert (window["start"], window["stop"], window["level"]) == (0, 5000, 2)  # 64 * 50 < 5000
    assert window["min"][0] == values[0, 1] and window["max"][-1] == values[-1, 1]
    assert len(window["min"]) <= 50 and window["step"] * len(window["min"]) >= 5000
    # The page lists it (from the catalog, saved on every write).
    assert "pcm" in requests.get(site.url("/"), auth=site.reader).text


def test_put_replaces_and_floats_answer_nan_as_null(site):
    assert site.put("temps", np.ones(10, "f8")).status_code == 201
    values = np.array([1.5, np.nan, -np.inf, 2.0], "<f4")
    assert site.put("temps", values).json()["dtype"] == "<f4"  # replaced, another dtype
    assert site.get("/api/arrays/temps/data", format="json").json()["data"] == [
        1.5,
        None,
        None,
        2.0,
    ]
    window = site.get("/api/arrays/temps/window", buckets=2).json()
    assert window["min"] == [1.5, None] and window["max"] == [1.5, 2.0]


def test_authorization(site):
    assert site.put("theirs", np.ones(3, "u1"), auth=site.other).status_code == 201
    # Another policy neither sees nor writes it; a reader reads but never writes.
    assert site.get("/api/arrays/theirs", auth=site.audio).status_code == 404
    assert "theirs" not in [a["name"] for a in site.get("/api/arrays", auth=site.audio).json()]
    assert site.append("theirs", npy(np.ones(1, "u1"))).status_code == 404
    assert site.put("theirs", np.ones(3, "u1")).status_code == 403
    assert site.put("mine", np.ones(3, "u1"), auth=site.reader).status_code == 403
    assert site.get("/api/arrays/theirs").status_code == 200
    assert site.get("/api/arrays/theirs", auth=("analyst", "wrong")).status_code == 401
    assert requests.get(site.url("/api/arrays")).status_code == 401
    cross = site.append(
        "theirs", npy(np.ones(1, "u1")), auth=site.other, Origin="https://elsewhere.example"
    )
    assert cross.status_code == 403 and "cross-site" in cross.text
    assert site.get("/api/arrays/theirs").json()["shape"] == [3]


def test_bad_input_is_a_clear_4xx_and_changes_nothing(site):
    ints = np.arange(100, dtype="<i4").reshape(50, 2)
    assert site.put("ints", ints).status_code == 201
    good = npy(np.ones((2, 2), "<i4"))
    header = len(good) - 16
    object_npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        object_npy, {"descr": "|O", "fortran_order": False, "shape": (1, 2)}
    )
    bad_bodies = {
        "floats into ints": (npy(np.ones((2, 2), "f8")), 400, "without loss"),
        "wrong row shape": (npy(np.ones((2, 3), "<i4")), 400, "each row must be shaped"),
        "truncated": (good[:-3], 400, "truncated"),
        "header only": (good[:header], 400, "truncated"),
        "padded": (good + b"\0" * 8, 400, "padded"),
        "object dtype": (object_npy.getvalue() + b"\0" * 16, 400, "never objects"),
        "not npy": (b"hello, world", 400, "not a valid .npy"),
        "empty": (b"", 400, "not a valid .npy"),
        "too large": (npy(np.ones(300_000, "<i4")), 413, "larger than the limit"),
    }
    for label, (body, status, message) in bad_bodies.items():
        answer = site.append("ints", body)
        assert (answer.status_code, message in answer.text.lower() or message in answer.text) == (
            status,
            True,
        ), (label, answer.status_code, answer.text)
    assert site.append("ints", good, **{"Content-Type": "text/plain"}).status_code == 415
    bad_reads = {
        "/api/arrays/ints/data?slice=0:51": (400, "(50, 2)"),
        "/api/arrays/ints/data?slice=50": (400, "outside"),
        "/api/arrays/ints/data?slice=-1": (400, "outside"),
        "/api/arrays/ints/data?slice=0,0,0": (400, "(50, 2)"),
        "/api/arrays/ints/data?slice=a:b": (400, "malformed"),
        "/api/arrays/ints/data?slice=0:10:0": (400, "outside"),
        "/api/arrays/ints/data?format=xml": (400, "npy or json"),
        "/api/arrays/ints/window?buckets=501": (400, "between 1 and 500"),
        "/api/arrays/ints/window?buckets=x": (400, "integer"),
        "/api/arrays/ints/window?stop=51": (400, "outside"),
        "/api/arrays/ints/window?column=2": (400, "column 2"),
        "/api/arrays/nothing": (404, "no array named 'nothing'"),
        "/api/arrays/a..b": (400, "cannot name an array"),
        "/api/arrays/a%0Ab/data": (400, "cannot name an array"),
    }
    for path, (status, message) in bad_reads.items():
        answer = requests.get(site.url(path), auth=site.reader)
        assert (answer.status_code, message in answer.text) == (status, True), (path, answer.text)
    bad_puts = [
        ("a..b", {}, 400, "cannot name an array"),
        ("a\nb", {}, 400, "cannot name an array"),
        ("ints", {"attributes": "{"}, 400, "JSON object"),
        ("ints", {"attributes": "[1]"}, 400, "JSON object"),
        ("ints", {"attributes": '{"kiln": 1}'}, 400, "reserved"),
    ]
    for name, params, status, message in bad_puts:
        answer = site.put(name, np.ones(2, "f4"), **params)
        assert (answer.status_code, message in answer.text) == (status, True), (name, answer.text)
    # Nothing was written: the array is as it was, and readable.
    assert np.array_equal(from_npy(site.get("/api/arrays/ints/data").content), ints)
    assert site.append("ints", good).status_code == 204
    assert site.get("/api/arrays/ints").json()["shape"] == [52, 2]


def test_size_limits(site):
    big = np.zeros(300_000, "<i2")  # 600 KB: under the 1 MiB upload limit
    assert site.put("big", big).status_code == 201
    assert site.append("big", npy(big)).status_code == 204
    too_large = site.get("/api/arrays/big/data")  # 1.2 MB > --max-slice-mib 1
    assert too_large.status_code == 413 and "smaller slice" in too_large.text
    assert site.get("/api/arrays/big/data", slice="0:1001", format="json").status_code == 413
    assert site.get("/api/arrays/big/data", slice="0:1000", format="json").status_code == 200
    assert len(from_npy(site.get("/api/arrays/big/data", slice="0:500000").content)) == 500_000
