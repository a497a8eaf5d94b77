"""ShaDir entries: the ``[metadata_json_string, signature]`` pairs, and their validation.

The server validates every entry it is given, because the reference servers store whatever
arrives and leave each client to trip over it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from kiln.shacache.keys import is_valid_signature_field

SHA512_HEX = re.compile(r"^[0-9a-f]{128}\Z")
# Real keys look like "file-urlmd5:<md5>", "pypi:name=version" or "kiln-part:<hash>"; the
# legacy client puts them in the URL path unencoded, so only path-safe characters are allowed.
DIR_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:=+,@~-]{0,511}\Z")
MAX_METADATA_BYTES = 32 * 1024
MAX_ENTRY_BYTES = 64 * 1024


class InvalidEntry(ValueError):
    """An entry or key is malformed; the message names what is wrong."""


def is_sha512(text: str) -> bool:
    return bool(SHA512_HEX.match(text))


def check_dir_key(key: str) -> str:
    if not DIR_KEY.match(key) or ".." in key:
        raise InvalidEntry(
            f"invalid ShaDir key {key[:80]!r}: use up to 512 characters among letters, digits"
            " and . _ : = + , @ ~ -, starting with a letter, digit or _, without '..'"
        )
    return key


@dataclass(frozen=True)
class Entry:
    metadata_text: str
    signature: str

    @property
    def metadata(self) -> dict:
        return json.loads(self.metadata_text)

    def as_pair(self) -> list[str]:
        return [self.metadata_text, self.signature]


def parse_metadata(metadata_text: str) -> dict:
    try:
        metadata = json.loads(metadata_text)
    except ValueError as error:
        raise InvalidEntry(f"the metadata is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise InvalidEntry("the metadata must be a JSON object")
    sha512 = metadata.get("sha512")
    if not isinstance(sha512, str) or not is_sha512(sha512):
        raise InvalidEntry("the metadata needs 'sha512': 128 lowercase hex characters")
    return metadata


def parse_entry_body(body: bytes) -> Entry:
    """Validate a ShaDir PUT body: ``json.dumps([metadata_json_string, signature_b64])``."""
    if len(body) > MAX_ENTRY_BYTES:
        raise InvalidEntry(f"the entry is {len(body)} bytes; the limit is {MAX_ENTRY_BYTES}")
    try:
        pair = json.loads(body)
    except ValueError as error:
        raise InvalidEntry(f"the body is not valid JSON: {error}") from None
    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
        raise InvalidEntry("the body must be a JSON list of two strings: [metadata, signature]")
    metadata_text, signature = pair
    if len(metadata_text.encode()) > MAX_METADATA_BYTES:
        raise InvalidEntry(f"the metadata is over {MAX_METADATA_BYTES} bytes")
    parse_metadata(metadata_text)
    if not is_valid_signature_field(signature):
        raise InvalidEntry(
            "the signature must be empty, base64 (legacy RSA) or NAME:BASE64 (Ed25519),"
            " several separated by spaces"
        )
    return Entry(metadata_text, signature)
