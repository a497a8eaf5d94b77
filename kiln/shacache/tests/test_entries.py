import json

import pytest

from kiln.shacache.entries import InvalidEntry, check_dir_key, is_sha512, parse_entry_body

pytestmark = pytest.mark.unit

GOOD = json.dumps({"sha512": "0" * 128})


def body(*pair: object) -> bytes:
    return json.dumps(list(pair)).encode()


def test_a_well_formed_entry_is_accepted() -> None:
    entry = parse_entry_body(body(GOOD, "alice:QUJD"))
    assert entry.metadata["sha512"] == "0" * 128


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not valid JSON"),
        (body(GOOD), "two strings"),
        (body(GOOD, 5), "two strings"),
        (body("[1]", ""), "JSON object"),
        (body("{", ""), "metadata is not valid JSON"),
        (body(json.dumps({"sha512": "A" * 128}), ""), "128 lowercase hex"),
        (body(json.dumps({"url": "x"}), ""), "needs 'sha512'"),
        (body(GOOD, "not base64!"), "signature must be"),
        (b"[" + b" " * 70000 + b"]", "limit"),
    ],
)
def test_malformed_entries_are_refused_with_the_reason(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidEntry, match=message):
        parse_entry_body(raw)


@pytest.mark.parametrize("key", ["file-urlmd5:0123abcd", "pypi:zc.buildout=3.0.1", "_x"])
def test_real_keys_are_accepted(key: str) -> None:
    assert check_dir_key(key) == key


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "a/../../b", "/abs", "..", "a\0b", "a b", "", "x" * 600, "%2e%2e"]
)
def test_path_like_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidEntry):
        check_dir_key(key)


@pytest.mark.parametrize("text", ["pypi:foo=1\n", "ok\nevil", "a" * 128 + "\n"])
def test_a_trailing_newline_is_not_part_of_a_valid_name(text: str) -> None:
    """`$` matches before a final newline; names must not end with one."""
    with pytest.raises(InvalidEntry):
        check_dir_key(text)
    assert not is_sha512(text)
