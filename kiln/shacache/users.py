"""Who may upload: HTTP Basic users (hashed passwords) and TLS client certificates.

Passwords are generated, shown once, and stored only as scrypt hashes in ``users.json``.
Client certificates are issued by a per-root certificate authority (``ca/``); the server
trusts that CA, and a verified certificate's common name is the user.  This is the only upload
authentication the real ``slapos.libnetworkcache`` 0.30 can use on Python 3.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kiln.common.durable import write_atomically
from kiln.common.passwords import VerifiedLogins, encode_hash, scrypt, verify_password
from kiln.shacache.keys import KEY_NAME


class UserError(ValueError):
    pass


# users.json keeps each user as {"salt": base64, "scrypt": base64 of a 32-byte digest}.
_DIGEST_LENGTH = 32


@dataclass
class UserDatabase:
    path: Path

    def __post_init__(self) -> None:
        # The parsed file and the mtime it had: a request costs one stat, not one parse.
        self._cache: tuple[float, dict[str, dict[str, str]]] | None = None

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            stamp = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, json.loads(self.path.read_text()))
        return self._cache[1]

    def _save(self, users: dict[str, dict[str, str]]) -> None:
        write_atomically(self.path, json.dumps(users, indent=1).encode())
        self._cache = None

    def names(self) -> list[str]:
        return sorted(self._load())

    def add(self, name: str) -> str:
        """Create a user with a generated password and answer that password (shown once)."""
        if not KEY_NAME.match(name):
            raise UserError(f"user name {name!r}: use letters, digits, '.', '_' or '-'")
        users = dict(self._load())
        if name in users:
            raise UserError(f"user {name!r} exists already; remove it first to reset it")
        password = secrets.token_urlsafe(24)
        salt = secrets.token_bytes(16)
        users[name] = {
            "salt": base64.b64encode(salt).decode(),
            "scrypt": base64.b64encode(scrypt(password, salt, _DIGEST_LENGTH)).decode(),
        }
        self._save(users)
        return password

    def remove(self, name: str) -> None:
        users = dict(self._load())
        if users.pop(name, None) is None:
            raise UserError(f"no user {name!r}")
        self._save(users)

    def stored_hash(self, name: str) -> str | None:
        """The user's password hash in the common text form, or None for an unknown user."""
        record = self._load().get(name)
        if record is None:
            return None
        return encode_hash(base64.b64decode(record["salt"]), base64.b64decode(record["scrypt"]))

    def check(self, name: str, password: str) -> bool:
        """Runs scrypt even for an unknown user, so both take as long as a wrong password."""
        return verify_password(password, self.stored_hash(name))


class CachedChecker:
    """The user database plus the logins verified recently, so scrypt is paid once."""

    def __init__(self, database: UserDatabase, capacity: int = 256) -> None:
        self._database = database
        self._logins = VerifiedLogins(capacity)

    def check(self, name: str, password: str, cached_only: bool = False) -> bool:
        """Whether the credential is good; with ``cached_only``, answer False unless remembered
        (that answer never runs scrypt, so it is safe on the event loop)."""
        stored = self._database.stored_hash(name)
        if cached_only:
            return self._logins.is_verified(name, password, stored)
        return self._logins.check(name, password, stored)


# --- Certificates ----------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class CertificateAuthority:
    """A small CA kept under ``<root>/ca`` that issues server and client certificates."""

    directory: Path

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    def ensure(self) -> None:
        if self.cert_path.exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kiln cache CA")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        write_atomically(self.key_path, _key_pem(key))
        self.cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, common_name: str, out_dir: Path, *, client: bool, hosts: list[str] = ()
    ) -> tuple[Path, Path]:
        """Issue a certificate; answer the paths of the certificate and its private key."""
        self.ensure()
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                critical=False,
            )
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(ca_key, hashes.SHA256())
        out_dir.mkdir(parents=True, exist_ok=True)
        cert_path = out_dir / f"{common_name}.crt"
        key_path = out_dir / f"{common_name}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        write_atomically(key_path, _key_pem(key))
        return cert_path, key_path
