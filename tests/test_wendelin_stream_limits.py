"""A policy cannot create streams without end, and streams do not hold files for ever."""

import os

import pytest
import requests

from kiln.testing.wendelin import ServerProcess, add_policy

pytestmark = pytest.mark.integration


def post_record(server: ServerProcess, auth: tuple[str, str], tag: str) -> requests.Response:
    return requests.post(f"{server.url}/tags/{tag}", json={"value": 1}, auth=auth, timeout=30)


def test_a_policy_stops_at_its_stream_limit_and_others_go_on(tmp_path) -> None:
    root = str(tmp_path / "root")
    wild = add_policy(root, "wild", "--tag-pattern", "wild.**")
    other = add_policy(root, "other", "--tag-pattern", "other.**")
    with ServerProcess(root, "--max-streams-per-policy", "5") as server:
        wild_auth, other_auth = (wild["user"], wild["password"]), (other["user"], other["password"])
        for number in range(5):
            assert post_record(server, wild_auth, f"wild.{number}").status_code == 204
        refused = post_record(server, wild_auth, "wild.5")
        assert refused.status_code == 403
        assert "already has 5 streams" in refused.text
        assert "--max-streams-per-policy" in refused.text
        assert post_record(server, wild_auth, "wild.0").status_code == 204  # existing: fine
        assert post_record(server, other_auth, "other.0").status_code == 204
        assert requests.get(f"{server.url}/api/streams/wild.5", auth=wild_auth).status_code == 404


def test_streams_hold_no_files_when_idle_so_the_service_restarts(tmp_path) -> None:
    """Each stream held two descriptors for ever: 520 tags exhausted 1,024, and the service
    could not restart. Now at most --max-open-streams streams have open files."""
    root = str(tmp_path / "root")
    policy = add_policy(root, "wild", "--tag-pattern", "wild.**")
    auth = (policy["user"], policy["password"])
    options = ("--max-open-streams", "4")
    with ServerProcess(root, *options) as server:
        idle = server.open_files()
        for number in range(60):
            assert post_record(server, auth, f"wild.{number}").status_code == 204
        assert server.open_files() - idle <= 2 * 4 + 4  # 4 streams' files, some sockets
    with ServerProcess(root, *options) as server:  # restarts, recovering all 60
        assert server.open_files() - idle <= 2 * 4 + 4
        for number in range(0, 60, 7):  # reading reopens a stream's files
            answer = requests.get(
                f"{server.url}/api/streams/wild.{number}/entries",
                params={"format": "json"},
                auth=auth,
                timeout=30,
            )
            assert answer.ok and answer.json()[0][1] == {"value": 1}
        assert post_record(server, auth, "wild.3").status_code == 204
        assert server.open_files() - idle <= 2 * 4 + 4


@pytest.mark.unit
def test_the_file_cache_closes_idle_streams_only(tmp_path) -> None:
    from kiln.wendelin.streams import FileCache, StreamFiles

    cache = FileCache(limit=2)
    streams = []
    for number in range(5):
        path = tmp_path / str(number)
        path.mkdir()
        streams.append(StreamFiles(str(path), cache))
    with streams[0].use() as (data_fd, _):  # in use: never closed under it
        for files in streams[1:]:
            with files.use():
                pass
        assert cache.open_count <= 3
        os.pwrite(data_fd, b"still open", 0)
    assert not streams[0].closed
    cache.close_idle(idle_seconds=0)
    assert all(files.closed for files in streams)
    assert cache.open_count == 0
    with streams[0].use() as (data_fd, _):  # reopened on use
        assert os.pread(data_fd, 10, 0) == b"still open"
