import pytest

from kiln.common.addresses import parse_host_port

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8420", ("127.0.0.1", 8420)),
        (":8420", ("127.0.0.1", 8420)),
        ("[::1]:5080", ("::1", 5080)),
        ("0.0.0.0:24224", ("0.0.0.0", 24224)),
    ],
)
def test_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


def test_a_default_port_completes_a_bare_host() -> None:
    assert parse_host_port("localhost", 24224) == ("localhost", 24224)
    assert parse_host_port("::1", 24224) == ("::1", 24224)


@pytest.mark.parametrize("text", ["localhost", "host:http", "host:0", "host:70000", "host:"])
def test_bad_addresses_name_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text)):
        parse_host_port(text)
