"""Fixtures shared by the cache tests: a real server on 127.0.0.1 and signing keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.shacache.client import CacheClient
from kiln.shacache.keys import Ed25519SigningKey, TrustList, generate_ed25519_key
from kiln.testing.cache import RunningCache, start_cache_server


@pytest.fixture
def cache_server(tmp_path: Path) -> Iterator[RunningCache]:
    server = start_cache_server(tmp_path / "cache")
    yield server
    server.stop()


@pytest.fixture
def alice() -> Ed25519SigningKey:
    return generate_ed25519_key("alice")


@pytest.fixture
def client(cache_server: RunningCache, alice: Ed25519SigningKey) -> CacheClient:
    trust = TrustList()
    trust.add_public_key(alice.public_text)
    return CacheClient.from_url(
        cache_server.upload_url, trust=trust, signing_keys=[alice], retries=2
    )
