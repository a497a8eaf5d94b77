import os
import stat
from pathlib import Path

import pytest

from kiln.common.durable import write_atomically

pytestmark = pytest.mark.unit


def test_write_atomically_replaces_the_file_privately(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "users.json"
    write_atomically(target, b"one")
    write_atomically(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(target.parent) == ["users.json"]  # no temporary file left behind


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "key"
    write_atomically(target, b"old")

    with pytest.raises(TypeError):
        write_atomically(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["key"]
