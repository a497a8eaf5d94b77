"""Signing keys and trust lists for ShaDir entries.

Two schemes sign the exact bytes of an entry's metadata JSON string:

* **Ed25519** (ours), written as ``name:base64(signature)``, with public keys as
  ``name:base64(32-byte key)`` and secret keys as ``name:base64(seed || public)``, the
  layout Nix's binary caches use, so keys are short, named, and pasteable.
* **Legacy RSA** (SlapOS): base64 of an RSA PKCS#1 v1.5 signature over SHA-1, trusted through
  PEM X.509 certificates that only carry the public key. This is what
  ``slapos.libnetworkcache`` writes and verifies.

An entry's signature field may hold several signatures separated by whitespace; the entry is
trusted when any one of them verifies against a trusted key.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.x509.oid import NameOID

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_B64 = r"[A-Za-z0-9+/]+={0,2}"
ED25519_TOKEN = re.compile(rf"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}):(?P<b64>{_B64})\Z")
LEGACY_TOKEN = re.compile(rf"^{_B64}\Z")
PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL
)
MAX_SIGNATURES = 8


class KeyError_(ValueError):
    """A key, certificate or signature could not be read; the message says which and why."""


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as error:
        raise KeyError_(f"{what} is not valid base64: {error}") from None


def _check_name(name: str) -> str:
    if not KEY_NAME.match(name):
        raise KeyError_(
            f"key name {name!r} is invalid: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def check_legacy_safe_name(name: str) -> str:
    """Refuse a key name whose Ed25519 signatures break slapos.libnetworkcache 0.30.

    That client base64-decodes each whole signature field (``name:base64``) without
    ``validate`` and without catching the error: non-alphabet characters (``:`` ``.`` ``_``
    ``-``) are dropped, and when the name leaves 4k+1 data characters in all (a name of 3,
    7, 11... alphabet characters, such as ``bob``) the decoding raises, which ends its
    ``select()`` for the whole key: the entries it could use under that key are lost too.
    """
    _check_name(name)
    # An Ed25519 signature is 64 bytes: 86 base64 characters and "==".
    field = f"{name}:{'A' * 86}=="
    try:
        base64.b64decode(field.encode())
    except binascii.Error:
        raise KeyError_(
            f"key name {name!r}: slapos.libnetworkcache 0.30 fails on every entry of a ShaDir"
            " key that such a key signs (its signatures do not decode as one base64 text);"
            " add or remove a character (e.g. {name}1), or pass --slapos-incompatible if no"
            " SlapOS node reads this cache".replace("{name}", name)
        ) from None
    return name


# --- Ed25519 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ed25519SigningKey:
    name: str
    private: ed25519.Ed25519PrivateKey

    @property
    def public_text(self) -> str:
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return f"{self.name}:{base64.b64encode(raw).decode()}"

    @property
    def secret_text(self) -> str:
        seed = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return f"{self.name}:{base64.b64encode(seed + public).decode()}"

    def sign(self, data: bytes) -> str:
        return f"{self.name}:{base64.b64encode(self.private.sign(data)).decode()}"


@dataclass(frozen=True)
class LegacyRSASigningKey:
    """An RSA key whose signatures ``slapos.libnetworkcache`` verifies (PKCS#1 v1.5, SHA-1)."""

    private: rsa.RSAPrivateKey
    certificate_pem: str | None = None

    def sign(self, data: bytes) -> str:
        # SHA-1 is what the legacy client verifies with; it is kept only for compatibility.
        signature = self.private.sign(data, padding.PKCS1v15(), hashes.SHA1())
        return base64.b64encode(signature).decode()


SigningKey = Ed25519SigningKey | LegacyRSASigningKey


def generate_ed25519_key(name: str) -> Ed25519SigningKey:
    return Ed25519SigningKey(_check_name(name), ed25519.Ed25519PrivateKey.generate())


def parse_ed25519_secret(text: str) -> Ed25519SigningKey:
    name, sep, b64 = text.strip().partition(":")
    if not sep:
        raise KeyError_("an Ed25519 secret key must look like NAME:BASE64")
    raw = _b64decode(b64, f"secret key {name!r}")
    if len(raw) not in (32, 64):
        raise KeyError_(f"secret key {name!r} has {len(raw)} bytes; expected 64 (seed + public)")
    return Ed25519SigningKey(
        _check_name(name), ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    )


def generate_legacy_rsa_key(common_name: str, bits: int = 2048) -> LegacyRSASigningKey:
    """An RSA key and a self-signed certificate, as ``slapos.signature`` makes with openssl."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        # The legacy client never checks expiry; 100 years matches what SlapOS generates.
        .not_valid_after(now + datetime.timedelta(days=36500))
        .sign(private, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return LegacyRSASigningKey(private, pem)


def rsa_private_pem(key: LegacyRSASigningKey) -> str:
    return key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def load_signing_key(path: Path | str) -> SigningKey:
    """Read a signing key file: an Ed25519 ``name:base64`` secret or a PEM RSA private key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise KeyError_(f"cannot read signing key {path}: {error.strerror}") from None
    if "-----BEGIN" in text:
        try:
            private = serialization.load_pem_private_key(text.encode(), password=None)
        except ValueError as error:
            raise KeyError_(f"{path} is not a readable PEM private key: {error}") from None
        if not isinstance(private, rsa.RSAPrivateKey):
            raise KeyError_(f"{path}: only RSA keys are supported in PEM form")
        return LegacyRSASigningKey(private)
    try:
        return parse_ed25519_secret(text)
    except KeyError_ as error:
        raise KeyError_(f"{path}: {error}") from None


def write_secret_file(path: Path, text: str) -> None:
    """Create a file readable only by its owner; refuse to overwrite a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# --- Verification ----------------------------------------------------------------------------


def split_signatures(field_text: str) -> list[str]:
    return field_text.split()


def is_valid_signature_field(field_text: str) -> bool:
    """Whether a ShaDir signature field is well formed (it may be empty: unsigned)."""
    tokens = split_signatures(field_text)
    if len(tokens) > MAX_SIGNATURES:
        return False
    return all(ED25519_TOKEN.match(t) or LEGACY_TOKEN.match(t) for t in tokens)


def split_trust_text(text: str) -> tuple[list[str], list[str]]:
    """The PEM certificate blocks and the ``name:base64`` words of a trust text (# comments
    ignored), unchecked: TrustList checks them as it adds them."""
    without_pem = PEM_CERTIFICATE.sub("", text)
    words = [word for line in without_pem.splitlines() for word in line.split("#", 1)[0].split()]
    return PEM_CERTIFICATE.findall(text), words


@dataclass(frozen=True)
class Verdict:
    trusted: bool
    reason: str
    signer: str | None = None


@dataclass
class TrustList:
    """Public keys whose signatures make an entry usable."""

    ed25519: dict[str, ed25519.Ed25519PublicKey] = field(default_factory=dict)
    certificates: list[x509.Certificate] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.ed25519 or self.certificates)

    def add_public_key(self, text: str) -> None:
        name, sep, b64 = text.strip().partition(":")
        if not sep:
            raise KeyError_(f"public key {text!r} must look like NAME:BASE64")
        raw = _b64decode(b64, f"public key {name!r}")
        if len(raw) != 32:
            raise KeyError_(f"public key {name!r} has {len(raw)} bytes; an Ed25519 key has 32")
        self.ed25519[_check_name(name)] = ed25519.Ed25519PublicKey.from_public_bytes(raw)

    def add_certificates(self, pem_text: str) -> None:
        for block in PEM_CERTIFICATE.findall(pem_text):
            try:
                certificate = x509.load_pem_x509_certificate(block.encode())
            except ValueError as error:
                raise KeyError_(f"unreadable PEM certificate: {error}") from None
            if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
                raise KeyError_("legacy signature certificates must hold an RSA key")
            self.certificates.append(certificate)

    def add_text(self, text: str) -> None:
        """Add what a trust file holds: ``name:base64`` lines, PEM certificates, # comments."""
        certificates, public_keys = split_trust_text(text)
        for block in certificates:
            self.add_certificates(block)
        for word in public_keys:
            self.add_public_key(word)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> TrustList:
        trust = cls()
        for text in texts:
            trust.add_text(text)
        return trust

    @classmethod
    def from_files(cls, paths: Iterable[Path | str]) -> TrustList:
        texts = []
        for path in paths:
            try:
                texts.append(Path(path).read_text())
            except OSError as error:
                raise KeyError_(f"cannot read trust file {path}: {error.strerror}") from None
        return cls.from_texts(texts)

    def verify(self, metadata_text: str, signature_field: str) -> Verdict:
        """Check an entry; the reason says why it is or is not trusted."""
        tokens = split_signatures(signature_field)
        if not tokens:
            return Verdict(False, "unsigned")
        if not is_valid_signature_field(signature_field):
            return Verdict(False, "malformed signature field")
        data = metadata_text.encode()
        reasons: list[str] = []
        for token in tokens:
            match = ED25519_TOKEN.match(token)
            if match:
                verdict = self._verify_ed25519(match["name"], match["b64"], data)
            else:
                verdict = self._verify_legacy(token, data)
            if verdict.trusted:
                return verdict
            reasons.append(verdict.reason)
        return Verdict(False, "; ".join(reasons))

    def _verify_ed25519(self, name: str, b64: str, data: bytes) -> Verdict:
        key = self.ed25519.get(name)
        if key is None:
            return Verdict(False, f"signed by {name!r}, which is not a trusted key")
        try:
            key.verify(base64.b64decode(b64), data)
        except (InvalidSignature, binascii.Error, ValueError):
            return Verdict(False, f"signature by {name!r} does not match the metadata")
        return Verdict(True, f"signed by trusted key {name!r}", name)

    def _verify_legacy(self, b64: str, data: bytes) -> Verdict:
        if not self.certificates:
            return Verdict(False, "legacy RSA signature, but no certificate is trusted")
        try:
            # validate=True: a token of base64 letters but a wrong length ("abcde") is a
            # malformed signature to skip with a reason, never an exception for the caller.
            signature = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            return Verdict(False, "legacy RSA signature is not valid base64")
        for certificate in self.certificates:
            public = certificate.public_key()
            assert isinstance(public, rsa.RSAPublicKey)
            try:
                public.verify(signature, data, padding.PKCS1v15(), hashes.SHA1())
            except (InvalidSignature, ValueError):
                continue
            subject = certificate.subject.rfc4514_string()
            return Verdict(True, f"legacy RSA signature by trusted certificate {subject}", subject)
        return Verdict(False, "legacy RSA signature matches no trusted certificate")


def sign_metadata(metadata_text: str, keys: Iterable[SigningKey]) -> str:
    """The signature field for an entry, signed by every given key."""
    return " ".join(key.sign(metadata_text.encode()) for key in keys)
