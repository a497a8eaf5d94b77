"""Password hashes (salted scrypt) and a cache of verified logins, for every service.

scrypt is slow on purpose (about 50 ms and 16 MiB each), so callers run :func:`verify_password`
in a worker thread and ask :class:`VerifiedLogins` first: fluentd and build nodes send many
requests with one password, and only the first of them pays for scrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

# The cost of one hash; stored hashes carry their salt and digest length, not these.
SCRYPT_COST = {"n": 1 << 14, "r": 8, "p": 1}
SCHEME = "scrypt"


def scrypt(password: str, salt: bytes, length: int = 64) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, dklen=length, **SCRYPT_COST)


def encode_hash(salt: bytes, digest: bytes) -> str:
    """``scrypt$<salt hex>$<digest hex>``: the one text form every store keeps."""
    return f"{SCHEME}${salt.hex()}${digest.hex()}"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    return encode_hash(salt, scrypt(password, salt))


# A well-formed hash no password matches, checked for unknown users so that a wrong user name
# costs as long as a wrong password (no user enumeration by timing).
_DECOY_HASH = encode_hash(b"\0" * 16, b"\0" * 64)


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (``None``: unknown user, still hashed)."""
    try:
        scheme, salt_hex, digest_hex = (stored or _DECOY_HASH).split("$")
        salt, digest = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    if scheme != SCHEME or not digest:
        return False
    computed = scrypt(password, salt, len(digest))
    return hmac.compare_digest(computed, digest) and stored is not None


class VerifiedLogins:
    """Recent successful checks, each tied to the stored hash it matched.

    An entry counts only while that hash is still the user's, so a changed or removed
    password takes effect at once without clearing the cache (which would turn a request
    that was just accepted into a 401).  Entries are keyed by an HMAC under a per-process
    key: the cache never holds a password.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._verified: dict[tuple[str, bytes], str] = {}
        self._key = secrets.token_bytes(32)

    def _token(self, user: str, password: str) -> tuple[str, bytes]:
        return user, hmac.digest(self._key, password.encode(), "sha256")

    def is_verified(self, user: str, password: str, stored: str | None) -> bool:
        """Answered from memory only: never runs scrypt, safe on an event loop."""
        return stored is not None and self._verified.get(self._token(user, password)) == stored

    def check(self, user: str, password: str, stored: str | None) -> bool:
        """Whether the password is good, running scrypt unless remembered (slow: use a thread)."""
        if self.is_verified(user, password, stored):
            return True
        if not verify_password(password, stored):
            return False
        if len(self._verified) >= self._capacity:
            self._verified.clear()
        self._verified[self._token(user, password)] = stored  # type: ignore[assignment]
        return True
