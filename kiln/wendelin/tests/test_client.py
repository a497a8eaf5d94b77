"""The Python client against a real server: listings, entries, ranges, a seekable file."""

import io
import math
import struct
import wave

import msgpack
import pytest
import requests

from kiln.testing.wendelin import cli
from kiln.wendelin import client, eventtime

pytestmark = pytest.mark.integration


def make_wav(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        frames = int(seconds * rate)
        audio.writeframes(
            b"".join(
                struct.pack("<h", int(10000 * math.sin(2 * math.pi * 440 * n / rate)))
                for n in range(frames)
            )
        )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def filled(deployment):
    auth = deployment.auth()
    url = f"{deployment.url}/ingestion_policies/turbines/ingest?reference=sensor.client"
    for block in range(5):
        body = b"".join(
            msgpack.packb([eventtime.pack(1_700_000_000 + n), {"n": n}])
            for n in range(block * 100, (block + 1) * 100)
        )
        assert requests.post(url, data=body, auth=auth).status_code == 204
    wav = make_wav(4.0)
    response = requests.put(f"{deployment.url}/api/streams/sensor.audio", data=wav, auth=auth)
    assert response.status_code == 201, response.text
    return deployment, wav


def test_streams_listing_and_lookup(filled) -> None:
    deployment, _ = filled
    context = client.connect(deployment.url, *deployment.auth())
    assert {"sensor.client", "sensor.audio"} <= set(context.streams.names())
    stream = context.streams["sensor.client"]
    assert stream.entry_count == 500
    with pytest.raises(KeyError):
        context.streams["sensor.missing"]
    with pytest.raises(requests.HTTPError):
        client.connect(deployment.url, deployment.auth()[0], "wrong")


def test_entries_by_time_and_index_page_through_the_stream(filled) -> None:
    deployment, _ = filled
    stream = client.connect(deployment.url, *deployment.auth()).streams["sensor.client"]
    recent = list(stream.entries(since=1_700_000_450))
    assert [record["n"] for _, record in recent] == list(range(450, 500))
    assert recent[0][0] == 1_700_000_450
    window = list(stream.entries(since=1_700_000_010, until=1_700_000_020, page=3))
    assert [record["n"] for _, record in window] == list(range(10, 20))
    assert [r["n"] for _, r in stream.entries(start=120, stop=125)] == list(range(120, 125))
    assert len(list(stream.entries(page=7))) == 500


def test_iterate_reads_bounded_pieces(filled) -> None:
    deployment, wav = filled
    stream = client.connect(deployment.url, *deployment.auth()).streams["sensor.audio"]
    pieces = list(stream.iterate(chunk_size=10_000))
    assert max(len(piece) for piece in pieces) == 10_000
    assert b"".join(pieces) == wav
    assert b"".join(stream.iterate(100, 200)) == wav[100:200]


def test_wave_opens_the_stream_over_http_ranges(filled) -> None:
    deployment, wav = filled
    stream = client.connect(deployment.url, *deployment.auth()).streams["sensor.audio"]
    with stream.open(block_size=4096) as remote, wave.open(remote) as audio:
        assert audio.getframerate() == 8000
        assert audio.getnframes() == 32000
        audio.setpos(16000)  # a seek: only the needed ranges are fetched
        frames = audio.readframes(10)
    with wave.open(io.BytesIO(wav)) as local:
        local.setpos(16000)
        assert frames == local.readframes(10)
    with stream.open() as remote:
        remote.seek(-4, io.SEEK_END)
        assert remote.read() == wav[-4:]


@pytest.fixture()
def fetched(monkeypatch) -> list[int]:
    """The size of every range the client fetches from now on."""
    sizes: list[int] = []
    original = client.Stream.read

    def counting(self, start: int, end: int) -> bytes:
        sizes.append(end - start)
        return original(self, start, end)

    monkeypatch.setattr(client.Stream, "read", counting)
    return sizes


def test_open_fetches_only_what_is_read(filled, fetched) -> None:
    deployment, _ = filled
    stream = client.connect(deployment.url, *deployment.auth()).streams["sensor.audio"]
    with stream.open(block_size=4096) as remote, wave.open(remote) as audio:
        audio.setpos(30000)
        audio.readframes(100)
    assert sum(fetched) <= 4 * 4096 < stream.size  # the header and one block, not the file


def test_range_requests_follow_http_semantics(filled) -> None:
    deployment, wav = filled
    url, auth = f"{deployment.url}/api/streams/sensor.audio/data", deployment.auth()
    tail = requests.get(url, headers={"Range": "bytes=-10"}, auth=auth)
    assert tail.status_code == 206 and tail.content == wav[-10:]
    assert tail.headers["Content-Range"] == f"bytes {len(wav) - 10}-{len(wav) - 1}/{len(wav)}"
    beyond = requests.get(url, headers={"Range": f"bytes={len(wav)}-"}, auth=auth)
    assert beyond.status_code == 416
    head = requests.head(url, auth=auth)
    assert head.headers["Content-Length"] == str(len(wav))
    assert head.headers["Accept-Ranges"] == "bytes"


def test_readers_see_everything_and_write_nothing(filled) -> None:
    deployment, _ = filled
    output = cli("reader", "add", "--root", deployment.server.root, "analyst")
    password = output.split("password:")[1].strip()
    context = client.connect(deployment.url, "analyst", password)
    assert "sensor.client" in context.streams
    append = requests.post(
        f"{deployment.url}/api/streams/sensor.client/append",
        json={"time": 1, "record": {"x": 1}},
        auth=("analyst", password),
    )
    assert append.status_code == 403


def test_manual_append_to_entry_and_raw_streams(filled) -> None:
    deployment, wav = filled
    auth = deployment.auth()
    entries_url = f"{deployment.url}/api/streams/sensor.client/append"
    response = requests.post(
        entries_url, json={"time": 1_800_000_000, "record": {"m": 1}}, auth=auth
    )
    assert response.status_code == 200 and response.json()["entries"] == 501
    raw_url = f"{deployment.url}/api/streams/sensor.audio/append"
    response = requests.post(raw_url, data=b"tail", auth=auth)
    assert response.json()["size"] == len(wav) + 4
    bad = requests.post(entries_url, data=b"\xc1", auth=auth)
    assert bad.status_code == 400


def test_entry_reads_of_a_raw_stream_say_why_not(filled) -> None:
    deployment, _ = filled
    response = requests.get(
        f"{deployment.url}/api/streams/sensor.audio/entries", auth=deployment.auth()
    )
    assert response.status_code == 409
    assert "raw bytes" in response.text


def test_scipy_reads_the_stream_as_a_wav_file_over_http_ranges(filled, fetched) -> None:
    from scipy.io import wavfile

    deployment, wav = filled
    stream = client.connect(deployment.url, *deployment.auth()).streams["sensor.audio"]
    with stream.open(block_size=64 << 10) as remote:
        rate, samples = wavfile.read(remote)
    local_rate, local_samples = wavfile.read(io.BytesIO(wav))
    assert rate == local_rate == 8000
    assert samples.dtype == local_samples.dtype and (samples == local_samples).all()
    assert max(fetched) <= 64 << 10  # in bounded range requests, never the stream at once
