"""The one cache configuration: its table, its parser's precedence, its writer."""

from __future__ import annotations

import configparser
from dataclasses import fields
from pathlib import Path

import pytest

from kiln.shacache.config import (
    SETTINGS,
    CacheConfig,
    ConfigError,
    networkcache_lines,
    parse_cache_config,
)
from kiln.shacache.keys import generate_ed25519_key, generate_legacy_rsa_key
from kiln.software.build import repository_root

pytestmark = pytest.mark.unit

ALICE = generate_ed25519_key("alice").public_text
BOB = generate_ed25519_key("bob").public_text
SERVE = "http://127.0.0.1:5080"


def test_every_field_is_one_row_of_the_table_and_every_option_is_read_once() -> None:
    with_options = [setting.name for setting in SETTINGS if setting.options]
    assert with_options == [field.name for field in fields(CacheConfig)]
    options = [option for setting in SETTINGS for option in setting.options]
    assert len(options) == len(set(options))


def test_the_documented_profile_names_only_known_options() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(repository_root() / "stack/kiln/networkcache.cfg")
    known = {option for setting in SETTINGS for option in setting.options}
    assert set(parser["networkcache"]) <= known
    # Its empty options mean "not set": they parse to the defaults.
    assert parse_cache_config(dict(parser["networkcache"])) == parse_cache_config()


def test_a_base_url_gives_public_downloads_and_credentialed_uploads() -> None:
    environ = {"KILN_CACHE_USER": "up loader", "KILN_CACHE_PASSWORD": "p@ss"}
    config = parse_cache_config(flags={"url": SERVE + "/"}, environ=environ)
    assert config.download_cache_url == f"{SERVE}/shacache"
    assert config.download_dir_url == f"{SERVE}/shadir"
    assert config.upload_cache_url == "http://up%20loader:p%40ss@127.0.0.1:5080/shacache"
    # Credentials in the URL win over the environment's.
    config = parse_cache_config(flags={"url": "http://alice:pw@[::1]:5080"}, environ=environ)
    assert config.upload_dir_url == "http://alice:pw@[::1]:5080/shadir"
    assert config.download_dir_url == "http://[::1]:5080/shadir"


def test_urls_come_whole_from_the_strongest_source() -> None:
    section = {"download-cache-url": "http://slapos:5080/shacache"}
    environ = {"KILN_CACHE_URL": "http://env:5080"}
    defaults = {"url": SERVE}
    # The section beats the environment and the default, and is not mixed with them.
    config = parse_cache_config(section, environ=environ, defaults=defaults)
    assert config.download_cache_url == "http://slapos:5080/shacache"
    assert config.download_dir_url is None and config.upload_cache_url is None
    # A flag beats the section.
    config = parse_cache_config(section, flags={"url": "http://flag:5080"}, environ=environ)
    assert config.download_dir_url == "http://flag:5080/shadir"
    # Without a section's URLs: the environment, then the caller's default.
    assert parse_cache_config(environ=environ, defaults=defaults).download_dir_url == (
        "http://env:5080/shadir"
    )
    assert parse_cache_config(defaults=defaults).download_dir_url == f"{SERVE}/shadir"
    assert not parse_cache_config().names_a_cache


def test_scalars_take_the_strongest_source(tmp_path: Path) -> None:
    flag, section, env = (tmp_path / name for name in ("flag.key", "section.key", "env.key"))
    for path in (flag, section, env):
        path.write_text("")
    environ = {"KILN_CACHE_SIGNING_KEY": str(env)}
    options = {"signing-key-file": str(section)}
    assert parse_cache_config(environ=environ).signing_key_file == env
    assert parse_cache_config(options, environ=environ).signing_key_file == section
    chosen = parse_cache_config(options, flags={"signing_key_file": flag}, environ=environ)
    assert chosen.signing_key_file == flag


def test_trust_is_a_key_or_a_file_of_keys_and_adds_up(tmp_path: Path) -> None:
    keys = tmp_path / "keys.pub"
    keys.write_text(f"# the builders\n{BOB}\n")
    config = parse_cache_config({"trusted-keys": ALICE}, flags={"trusted_keys": [str(keys), ALICE]})
    assert config.trusted_keys == (BOB, ALICE)
    assert set(config.trust().ed25519) == {"alice", "bob"}


def test_bad_values_are_named_with_where_they_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--trust 'missing.pub': no such file, and not a key"):
        parse_cache_config(flags={"trusted_keys": ["missing.pub"]})
    with pytest.raises(ConfigError, match=r"--trust 'alice:\?\?': .*base64"):
        parse_cache_config(flags={"trusted_keys": ["alice:??"]})
    with pytest.raises(ConfigError, match=r"\[networkcache\] kiln-binary-cache 'maybe': .*true"):
        parse_cache_config({"kiln-binary-cache": "maybe"})
    with pytest.raises(ConfigError, match=r"\$KILN_CACHE_URL 'cache:5080': .*http://"):
        parse_cache_config(environ={"KILN_CACHE_URL": "cache:5080"})
    missing = tmp_path / "missing.key"
    with pytest.raises(ConfigError, match=r"--sign-with .*missing.key.*no such file"):
        parse_cache_config(flags={"signing_key_file": missing})


def test_slapos_names_are_read(tmp_path: Path) -> None:
    certificate, key = tmp_path / "node.crt", tmp_path / "node.key"
    certificate.write_text("")
    key.write_text("")
    config = parse_cache_config(
        {
            "shadir-cert-file": str(certificate),
            "shadir-key-file": str(key),
            "require-signature": "no",
        }
    )
    assert (config.client_cert_file, config.client_key_file) == (certificate, key)
    assert config.require_signature is False


def test_the_writer_writes_what_the_parser_reads_and_never_shows_passwords(
    tmp_path: Path,
) -> None:
    key = tmp_path / "builder.key"
    key.write_text("")
    config = parse_cache_config(
        flags={
            "url": "http://alice:s3cret@127.0.0.1:5080",
            "trusted_keys": [ALICE, BOB],
            "signing_key_file": key,
            "binary_cache": False,
        }
    )
    lines = networkcache_lines(config)
    assert f"trusted-keys = {ALICE} {BOB}" in lines
    assert "kiln-binary-cache = false" in lines
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string("[networkcache]\n" + "\n".join(lines))
    assert parse_cache_config(dict(parser["networkcache"])) == config
    assert "s3cret" not in repr(config) and "s3cret" not in str(config)


def test_certificates_are_trusted_and_written_on_continuation_lines() -> None:
    pem = generate_legacy_rsa_key("node1-signature").certificate_pem
    assert pem is not None
    config = parse_cache_config({"signature-certificate-list": pem, "trusted-keys": ALICE})
    assert len(config.trust().certificates) == 1 and set(config.trust().ed25519) == {"alice"}
    lines = networkcache_lines(config)
    assert f"trusted-keys = {ALICE}" in lines and "    -----BEGIN CERTIFICATE-----" in lines
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string("[networkcache]\n" + "\n".join(lines))
    again = parse_cache_config(dict(parser["networkcache"]))
    assert len(again.trust().certificates) == 1 and set(again.trust().ed25519) == {"alice"}
