"""Ingestion policies: who may send, which tags they may send, and where the data goes.

A policy has generated credentials only (no defaults):

* an HTTP Basic user and password; the catalog keeps a salted scrypt hash of the password;
* a forward-protocol shared key, kept in ``secrets/<policy>.json`` with mode 0600 because the
  handshake digest needs the key itself (and, when forward user auth is on, the password too).

A tag accepted by a policy goes to the data stream of the same name.
"""

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

from kiln.common.passwords import VerifiedLogins, hash_password, verify_password
from kiln.wendelin.catalog import AlreadyExists, Catalog, PolicyRecord

# Re-exported: `kiln wendelin policy` and the tests hash and check passwords through here.
__all__ = ["hash_password", "verify_password"]

POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")


@dataclass(frozen=True, slots=True)
class Credentials:
    http_user: str
    http_password: str
    shared_key: str


@dataclass(frozen=True, slots=True)
class Policy:
    record: PolicyRecord
    shared_key: str
    forward_password: str | None

    @property
    def name(self) -> str:
        return self.record.name

    def accepts(self, tag: str) -> bool:
        return tag_matcher(self.record.tag_pattern).fullmatch(tag) is not None


@lru_cache(maxsize=256)
def tag_matcher(pattern: str) -> re.Pattern[str]:
    """fluentd's <match> syntax: ``*`` is one tag part, ``**`` zero or more, ``{a,b}`` either,
    and space-separated patterns are alternatives."""
    return re.compile("|".join(f"(?:{_pattern_regex(part)})" for part in pattern.split()))


def _pattern_regex(pattern: str) -> str:
    out = []
    position = 0
    while position < len(pattern):
        if pattern.startswith(".**", position):
            out.append(r"(?:\.[^.]+)*")  # "a.**" also matches "a"
            position += 3
        elif pattern.startswith("**", position):
            out.append(r"(?:[^.]+(?:\.|$))*" if position + 2 < len(pattern) else r".*")
            position += 2
        elif pattern[position] == "*":
            out.append(r"[^.]+")
            position += 1
        elif pattern[position] == "{":
            close = pattern.index("}", position)
            choices = pattern[position + 1 : close].split(",")
            out.append("(?:" + "|".join(_pattern_regex(choice) for choice in choices) + ")")
            position = close + 1
        else:
            out.append(re.escape(pattern[position]))
            position += 1
    return "".join(out)


def check_policy_name(name: str) -> str:
    if not POLICY_NAME.match(name):
        raise ValueError(
            f"{name!r} cannot name a policy: use letters, digits, '_' and '-' (at most 64)"
        )
    return name


class PolicyRegistry:
    """Policies from the catalog and their secrets, reloaded when the CLI changes them."""

    def __init__(self, root: str, catalog: Catalog) -> None:
        self.secrets_directory = os.path.join(root, "secrets")
        os.makedirs(self.secrets_directory, mode=0o700, exist_ok=True)
        self.catalog = catalog
        self._policies: dict[str, Policy] = {}
        self._by_user: dict[str, Policy] = {}
        self._version = -1
        self._logins = VerifiedLogins()

    # -- administration (CLI) -----------------------------------------------------------------

    def add(
        self,
        name: str,
        tag_pattern: str,
        forward_user_auth: bool = False,
        anonymous_forward: bool = False,
    ) -> Credentials:
        check_policy_name(name)
        tag_matcher(tag_pattern)
        credentials = Credentials(
            http_user=f"{name}-{secrets.token_hex(3)}",
            http_password=secrets.token_urlsafe(24),
            shared_key=secrets.token_urlsafe(32),
        )
        record = PolicyRecord(
            name=name,
            tag_pattern=tag_pattern,
            http_user=credentials.http_user,
            password_hash=hash_password(credentials.http_password),
            forward_user_auth=forward_user_auth,
            anonymous_forward=anonymous_forward,
            created=time.time(),
        )
        secret = {"shared_key": credentials.shared_key}
        if forward_user_auth:
            secret["forward_password"] = credentials.http_password
        self._write_secret(name, secret)
        try:
            self.catalog.add_policy(record)
        except Exception:
            os.unlink(self._secret_path(name))
            raise
        return credentials

    def remove(self, name: str) -> bool:
        removed = self.catalog.remove_policy(name)
        if os.path.exists(self._secret_path(name)):
            os.unlink(self._secret_path(name))
        return removed

    def _secret_path(self, name: str) -> str:
        return os.path.join(self.secrets_directory, f"{name}.json")

    def _write_secret(self, name: str, secret: dict[str, str]) -> None:
        path = self._secret_path(name)
        if os.path.exists(path):
            raise AlreadyExists(f"policy {name!r} already exists")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as secret_file:
            json.dump(secret, secret_file)
            secret_file.flush()
            os.fsync(secret_file.fileno())

    # -- lookups (service) --------------------------------------------------------------------

    def _refresh(self) -> None:
        version = self.catalog.version()
        if version == self._version:
            return
        policies = {}
        for record in self.catalog.policies():
            try:
                with open(self._secret_path(record.name)) as secret_file:
                    secret = json.load(secret_file)
            except FileNotFoundError:
                continue  # half-created by a concurrent `policy add`; picked up next time
            policies[record.name] = Policy(
                record, secret["shared_key"], secret.get("forward_password")
            )
        self._policies = policies
        self._by_user = {policy.record.http_user: policy for policy in policies.values()}
        # _logins is kept: an entry only counts while the stored hash it was checked against
        # is still the user's, and clearing it here could turn a request that
        # verify_credentials just accepted into a 401 when the CLI changes another policy.
        self._version = version

    def get(self, name: str) -> Policy | None:
        self._refresh()
        return self._policies.get(name)

    def all(self) -> list[Policy]:
        self._refresh()
        return list(self._policies.values())

    def by_user(self, user: str) -> Policy | None:
        self._refresh()
        return self._by_user.get(user)

    def is_verified(self, user: str, password: str, stored_hash: str) -> bool:
        """Whether ``check_password`` already accepted this password: no scrypt, no waiting."""
        return self._logins.is_verified(user, password, stored_hash)

    def check_password(self, user: str, password: str, stored_hash: str | None) -> bool:
        """scrypt is slow on purpose (about 50 ms): run it in a worker thread, not on the
        event loop. fluentd sends many chunks with one password, so successes are cached."""
        return self._logins.check(user, password, stored_hash)
