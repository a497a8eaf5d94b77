import base64
import json

import pytest

from kiln.shacache.keys import (
    KeyError_,
    TrustList,
    generate_ed25519_key,
    generate_legacy_rsa_key,
    is_valid_signature_field,
    load_signing_key,
    parse_ed25519_secret,
    rsa_private_pem,
    sign_metadata,
)

pytestmark = pytest.mark.unit

METADATA = json.dumps({"sha512": "a" * 128, "url": "http://example.invalid/x.tar.gz"})


def test_ed25519_round_trip_through_text() -> None:
    key = generate_ed25519_key("alice")
    again = parse_ed25519_secret(key.secret_text)
    assert again.public_text == key.public_text
    assert key.public_text.startswith("alice:")
    assert len(base64.b64decode(key.public_text.split(":")[1])) == 32


def test_trusted_signature_is_accepted_with_reason() -> None:
    key = generate_ed25519_key("alice")
    trust = TrustList.from_texts([key.public_text])
    verdict = trust.verify(METADATA, sign_metadata(METADATA, [key]))
    assert verdict.trusted and "alice" in verdict.reason


def test_untrusted_tampered_and_unsigned_entries_are_refused() -> None:
    alice, mallory = generate_ed25519_key("alice"), generate_ed25519_key("mallory")
    trust = TrustList.from_texts([alice.public_text])
    assert "not a trusted key" in trust.verify(METADATA, mallory.sign(METADATA.encode())).reason
    tampered = METADATA.replace("x.tar", "y.tar")
    assert not trust.verify(tampered, alice.sign(METADATA.encode())).trusted
    assert trust.verify(METADATA, "").reason == "unsigned"


def test_a_key_with_a_trusted_name_but_other_bytes_is_refused() -> None:
    alice, impostor = generate_ed25519_key("alice"), generate_ed25519_key("alice")
    trust = TrustList.from_texts([alice.public_text])
    verdict = trust.verify(METADATA, impostor.sign(METADATA.encode()))
    assert not verdict.trusted and "does not match" in verdict.reason


def test_any_one_trusted_signature_among_several_suffices() -> None:
    alice, bob = generate_ed25519_key("alice"), generate_ed25519_key("bob")
    legacy = generate_legacy_rsa_key("legacy")
    field = sign_metadata(METADATA, [alice, legacy, bob])
    assert len(field.split()) == 3
    assert TrustList.from_texts([bob.public_text]).verify(METADATA, field).trusted
    assert legacy.certificate_pem
    assert TrustList.from_texts([legacy.certificate_pem]).verify(METADATA, field).trusted
    assert not TrustList().verify(METADATA, field).trusted


def test_legacy_key_file_loads_and_signs_like_openssl_sha1(tmp_path) -> None:
    legacy = generate_legacy_rsa_key("node")
    path = tmp_path / "node.key"
    path.write_text(rsa_private_pem(legacy))
    loaded = load_signing_key(path)
    assert legacy.certificate_pem
    trust = TrustList.from_texts([legacy.certificate_pem])
    assert trust.verify(METADATA, loaded.sign(METADATA.encode())).trusted


def test_trust_file_accepts_comments_keys_and_certificates() -> None:
    alice = generate_ed25519_key("alice")
    legacy = generate_legacy_rsa_key("node")
    text = f"# our builders\n{alice.public_text}  # alice\n\n{legacy.certificate_pem}"
    trust = TrustList.from_texts([text])
    assert set(trust.ed25519) == {"alice"} and len(trust.certificates) == 1


@pytest.mark.parametrize(
    "bad", ["alice", "alice:%%%", "alice:" + base64.b64encode(b"short").decode(), "../x:AAAA"]
)
def test_malformed_public_keys_are_named_in_the_error(bad: str) -> None:
    with pytest.raises(KeyError_):
        TrustList().add_public_key(bad)


@pytest.mark.parametrize(
    ("field", "valid"),
    [
        ("", True),
        ("QUJD", True),
        ("alice:QUJD", True),
        ("alice:QUJD bob:QUJD", True),
        ("alice:QU JD!", False),
        ("<script>", False),
        (" ".join(["a:QUJD"] * 9), False),
    ],
)
def test_signature_field_format(field: str, valid: bool) -> None:
    assert is_valid_signature_field(field) is valid


@pytest.mark.parametrize("bad", ["abcde", "a", "AAAA=AAA", "abc!", "AAAA AAAAA"])
def test_a_malformed_legacy_signature_is_skipped_with_a_reason(bad: str) -> None:
    """An upload user could store `abcde` as a signature; a client that trusts legacy
    certificates must skip that entry, not crash (it raised binascii.Error before)."""
    legacy = generate_legacy_rsa_key("node")
    assert legacy.certificate_pem
    trust = TrustList.from_texts([legacy.certificate_pem])
    verdict = trust.verify(METADATA, bad)
    assert not verdict.trusted and verdict.reason


def test_a_good_signature_beside_a_truncated_one_still_counts() -> None:
    legacy = generate_legacy_rsa_key("node")
    assert legacy.certificate_pem
    trust = TrustList.from_texts([legacy.certificate_pem])
    assert trust.verify(METADATA, f"abcde {sign_metadata(METADATA, [legacy])}").trusted
