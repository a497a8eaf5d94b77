from pathlib import Path

import pytest

from kiln.shacache.users import CachedChecker, CertificateAuthority, UserDatabase, UserError

pytestmark = pytest.mark.unit


def test_generated_password_is_checked_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    database = UserDatabase(tmp_path / "users.json")
    password = database.add("builder")
    assert database.check("builder", password)
    assert not database.check("builder", password + "x")
    assert not database.check("nobody", password)
    assert password not in (tmp_path / "users.json").read_text()
    with pytest.raises(UserError, match="exists"):
        database.add("builder")
    with pytest.raises(UserError):
        database.add("../evil")


def test_remembered_logins_are_forgotten_when_a_user_is_removed(tmp_path: Path) -> None:
    database = UserDatabase(tmp_path / "users.json")
    password = database.add("builder")
    database.add("other")
    checker = CachedChecker(database)
    assert checker.check("builder", password)
    assert checker.check("builder", password, cached_only=True)
    database.remove("builder")
    assert not checker.check("builder", password, cached_only=True)
    assert not checker.check("builder", password)


def test_certificate_authority_issues_client_and_server_certificates(tmp_path: Path) -> None:
    from cryptography import x509

    ca = CertificateAuthority(tmp_path / "ca")
    cert_path, key_path = ca.issue("node1", tmp_path / "out", client=True)
    server_cert, _ = ca.issue("cache", tmp_path / "out", client=False, hosts=["127.0.0.1", "cache"])
    assert oct(key_path.stat().st_mode)[-3:] == "600"
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert certificate.issuer == x509.load_pem_x509_certificate(ca.cert_path.read_bytes()).subject
    names = x509.load_pem_x509_certificate(
        server_cert.read_bytes()
    ).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "cache" in names.value.get_values_for_type(x509.DNSName)
