"""Policies: tag patterns, generated credentials, secrets on disk."""

import json
import os
import stat

import pytest

from kiln.testing.wendelin import add_policy
from kiln.wendelin.catalog import AlreadyExists, SQLiteCatalog
from kiln.wendelin.policies import PolicyRegistry, tag_matcher, verify_password

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
    from kiln.testing.wendelin import cli

    listing = cli("policy", "list", "--root", str(tmp_path))
    assert "plant-7" in listing and "plant7.**" in listing
    assert credentials["password"] not in listing and credentials["shared_key"] not in listing
    assert json.loads(json.dumps(credentials))["user"].startswith("plant-7-")


def test_a_cached_password_counts_only_for_the_hash_it_matched(tmp_path) -> None:
    registry = PolicyRegistry(str(tmp_path), SQLiteCatalog(str(tmp_path / "catalog.sqlite")))
    credentials = registry.add("turbines", "sensor.**")
    policy = registry.by_user(credentials.http_user)
    assert policy is not None
    stored = policy.record.password_hash
    user, password = credentials.http_user, credentials.http_password
    assert not registry.is_verified(user, password, stored)  # only after a real check
    assert not registry.check_password(user, "guessed", stored)
    assert not registry.is_verified(user, "guessed", stored)  # failures are not cached
    assert registry.check_password(user, password, stored)
    assert registry.is_verified(user, password, stored)
    registry.add("other", "**")  # another policy changes: the check still holds
    assert registry.by_user("nobody") is None and registry.is_verified(user, password, stored)
    assert not registry.is_verified(user, password, "scrypt$00$00")  # a new hash: check again
