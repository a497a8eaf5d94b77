"""Policies: tag patterns, generated credentials, secrets on disk."""

import json
import os
import stat

import pytest

from wendelin.catalog import AlreadyExists, SQLiteCatalog
from wendelin.policies import PolicyRegistry, tag_matcher, verify_password
from wendelin.testing import add_policy

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("pattern", "tag", "accepted"),
    [
        ("sensor.*", "sensor.t1", True),
        ("sensor.*", "sensor.t1.temp", False),
        ("sensor.**", "sensor", True),
        ("sensor.**", "sensor.t1.temp", True),
        ("**", "anything.at.all", True),
        ("a.{b,c}", "a.c", True),
        ("a.{b,c}", "a.d", False),
        ("a b", "b", True),
        ("*", "a.b", False),
    ],
)
def test_fluentd_match_patterns(pattern: str, tag: str, accepted: bool) -> None:
    assert (tag_matcher(pattern).fullmatch(tag) is not None) is accepted


def test_credentials_are_generated_and_only_hashes_or_private_files_are_kept(tmp_path) -> None:
    registry = PolicyRegistry(str(tmp_path), SQLiteCatalog(str(tmp_path / "catalog.sqlite")))
    first = registry.add("turbines", "sensor.**")
    second = registry.add("other", "**")
    assert first.http_password != second.http_password
    assert first.shared_key != second.shared_key
    assert len(first.http_password) >= 32
    record = registry.get("turbines").record  # type: ignore[union-attr]
    assert first.http_password not in record.password_hash
    assert verify_password(first.http_password, record.password_hash)
    assert not verify_password("guess", record.password_hash)
    secret_file = tmp_path / "secrets" / "turbines.json"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert first.http_password not in secret_file.read_text()  # no forward user auth asked
    with pytest.raises(AlreadyExists):
        registry.add("turbines", "**")


def test_cli_prints_credentials_and_list_shows_no_secrets(tmp_path) -> None:
    credentials = add_policy(str(tmp_path), "plant-7", "--tag-pattern", "plant7.**")
    assert set(credentials) == {"policy", "user", "password", "shared_key"}
    from wendelin.testing import cli

    listing = cli("policy", "list", "--root", str(tmp_path))
    assert "plant-7" in listing and "plant7.**" in listing
    assert credentials["password"] not in listing and credentials["shared_key"] not in listing
    assert json.loads(json.dumps(credentials))["user"].startswith("plant-7-")
