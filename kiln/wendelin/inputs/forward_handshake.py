"""The forward protocol's handshake (docs/protocols/fluentd-forward.md#handshake): HELO, PING, PONG.

The server's HELO carries a nonce and an auth salt; the client's PING proves it knows a
policy's shared key (and, with ``<user>``, its password) by digests over them, and the PONG
proves the server knows the key too. The digests are the same on both ends: our own forward
client (``kiln.testing.forward_client``) computes them with the functions here.
"""

import hashlib
import hmac
from collections.abc import Iterable

from kiln.wendelin.policies import Policy


def shared_key_digest(salt: bytes, hostname: bytes, nonce: bytes, shared_key: str) -> str:
    """PING's digest from the client ``hostname``, PONG's from the server's."""
    return _sha512_hex(salt, hostname, nonce, shared_key.encode())


def password_digest(auth_salt: bytes, username: bytes, password: str) -> str:
    """PING's password digest, with fluentd ``<user>`` authentication."""
    return _sha512_hex(auth_salt, username, password.encode())


def anonymous_password_digest(auth_salt: bytes) -> str:
    """What out_forward sends as its password digest when it has no ``<user>``."""
    return _sha512_hex(auth_salt)


def _sha512_hex(*parts: bytes) -> str:
    return hashlib.sha512(b"".join(parts)).hexdigest()


def authenticate(
    policies: Iterable[Policy],
    nonce: bytes,
    auth_salt: bytes,
    hostname: bytes,
    salt: bytes,
    digest: str,
    username: bytes,
    sent_password_digest: bytes,
) -> tuple[Policy | None, str]:
    """The policy whose shared key a PING proves, or None and the reason to refuse it."""
    for policy in policies:
        expected = shared_key_digest(salt, hostname, nonce, policy.shared_key)
        if not hmac.compare_digest(expected, digest):
            continue
        if policy.forward_password is not None:
            user = policy.record.http_user.encode()
            wanted = password_digest(auth_salt, user, policy.forward_password)
            if username != user or not hmac.compare_digest(wanted.encode(), sent_password_digest):
                return None, "username/password mismatch"
            return policy, ""
        # No user auth: out_forward sends ("", "") or ("", sha512_hex(auth salt)).
        anonymous = anonymous_password_digest(auth_salt).encode()
        if username == b"" and sent_password_digest in (b"", anonymous):
            return policy, ""
        return None, "username/password mismatch"
    return None, "shared_key mismatch"
