"""Who may upload: HTTP Basic users (hashed passwords) and TLS client certificates.

Passwords are generated, shown once, and stored only as scrypt hashes in ``users.json``.
Client certificates are issued by a per-root certificate authority (``ca/``); the server
trusts that CA, and a verified certificate's common name is the user.  This is the only upload
authentication the real ``slapos.libnetworkcache`` 0.30 can use on Python 3.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shacache.keys import KEY_NAME

SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class UserError(ValueError):
    pass


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)


@dataclass
class UserDatabase:
    path: Path

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def _save(self, users: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(users, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self.path)

    def names(self) -> list[str]:
        return sorted(self._load())

    def add(self, name: str) -> str:
        """Create a user with a generated password and answer that password (shown once)."""
        if not KEY_NAME.match(name):
            raise UserError(f"user name {name!r}: use letters, digits, '.', '_' or '-'")
        users = self._load()
        if name in users:
            raise UserError(f"user {name!r} exists already; remove it first to reset it")
        password = secrets.token_urlsafe(24)
        salt = secrets.token_bytes(16)
        users[name] = {
            "salt": base64.b64encode(salt).decode(),
            "scrypt": base64.b64encode(_scrypt(password, salt)).decode(),
        }
        self._save(users)
        return password

    def remove(self, name: str) -> None:
        users = self._load()
        if users.pop(name, None) is None:
            raise UserError(f"no user {name!r}")
        self._save(users)

    def check(self, name: str, password: str) -> bool:
        record = self._load().get(name)
        if record is None:
            # Hash anyway so that a wrong user name takes as long as a wrong password.
            _scrypt(password, b"0" * 16)
            return False
        expected = base64.b64decode(record["scrypt"])
        return hmac.compare_digest(_scrypt(password, base64.b64decode(record["salt"])), expected)


class CachedChecker:
    """Remembers recent successful logins, so that scrypt is not paid on every request."""

    def __init__(self, database: UserDatabase, capacity: int = 256) -> None:
        self._database = database
        self._capacity = capacity
        self._good: dict[bytes, str] = {}
        self._stamp = 0.0

    def check(self, name: str, password: str, cached_only: bool = False) -> bool:
        """Whether the credential is good; with ``cached_only``, answer False unless remembered."""
        try:
            stamp = self._database.path.stat().st_mtime
        except FileNotFoundError:
            stamp = 0.0
        if stamp != self._stamp:
            # users.json changed (a user removed or added): forget every remembered login.
            self._good.clear()
            self._stamp = stamp
        token = hashlib.sha256(f"{name}\0{password}".encode()).digest()
        if self._good.get(token) == name:
            return True
        if cached_only or not self._database.check(name, password):
            return False
        if len(self._good) >= self._capacity:
            self._good.clear()
        self._good[token] = name
        return True


# --- Certificates ----------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


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
        _write_private(self.key_path, _key_pem(key))
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
        _write_private(key_path, _key_pem(key))
        return cert_path, key_path
