import base64
import hashlib

import pytest

from kiln.common.passwords import (
    VerifiedLogins,
    encode_hash,
    hash_password,
    scrypt,
    verify_password,
)

pytestmark = pytest.mark.unit


def test_a_hash_verifies_its_password_only() -> None:
    stored = hash_password("right")
    assert stored.startswith("scrypt$")
    assert verify_password("right", stored)
    assert not verify_password("wrong", stored)


def test_hashes_written_before_the_common_module_still_verify() -> None:
    # The data platform stored `scrypt$salt$digest` with 64-byte digests; the cache stores
    # base64 salt and a 32-byte digest in users.json.  Both are read unchanged.
    salt = b"s" * 16
    policy_hash = (
        f"scrypt${salt.hex()}${hashlib.scrypt(b'pw', salt=salt, n=1 << 14, r=8, p=1).hex()}"
    )
    assert verify_password("pw", policy_hash)
    cache_digest = hashlib.scrypt(b"pw", salt=salt, n=1 << 14, r=8, p=1, dklen=32)
    record = {
        "salt": base64.b64encode(salt).decode(),
        "scrypt": base64.b64encode(cache_digest).decode(),
    }
    stored = encode_hash(base64.b64decode(record["salt"]), base64.b64decode(record["scrypt"]))
    assert verify_password("pw", stored)
    assert not verify_password("pw2", stored)


@pytest.mark.parametrize("stored", [None, "", "scrypt$zz$00", "md5$00$00", "scrypt$00$", "a$b"])
def test_unknown_users_and_malformed_hashes_never_verify(stored: str | None) -> None:
    assert not verify_password("anything", stored)


def test_verified_logins_remember_a_success_for_its_stored_hash_only() -> None:
    logins = VerifiedLogins()
    stored = encode_hash(b"x" * 16, scrypt("pw", b"x" * 16))
    assert not logins.is_verified("alice", "pw", stored)
    assert not logins.check("alice", "bad", stored)
    assert logins.check("alice", "pw", stored)
    assert logins.is_verified("alice", "pw", stored)
    # A changed password (a new stored hash) or a removed user needs a new check.
    assert not logins.is_verified("alice", "pw", hash_password("pw"))
    assert not logins.is_verified("alice", "pw", None)
    assert not logins.is_verified("bob", "pw", stored)
