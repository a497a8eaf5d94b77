"""One typed cache configuration: the ``[networkcache]`` section, flags and the environment.

Every setting is described once, in :data:`SETTINGS`: its ``[networkcache]`` options (the
SlapOS names, plus kiln's own), its flags, its environment variable, its kind, its default
and its help.  Every way of pointing kiln at a cache reads through the one parser,
:func:`parse_cache_config`: ``kiln cache`` (with or without ``--config slapos.cfg``),
``kiln software build`` and the buildout extension, which reads its section only (a buildout
run is configured by its profile, not by the environment of whoever runs it).  The one
writer, :func:`networkcache_lines`, turns a configuration back into option lines for the
profile that ``kiln software build`` generates.

A flag beats the section, which beats the environment, which beats the default, except:

- the four URLs come together from one place, so that two sources never mix: ``--cache
  URL``, else the section's URL options, else ``$KILN_CACHE_URL``, else the caller's
  default.  A base URL (a ``kiln cache serve``) gives ``URL/shacache`` and ``URL/shadir``:
  downloads without credentials, uploads with those of the URL or, when it has none, of
  ``$KILN_CACHE_USER`` and ``$KILN_CACHE_PASSWORD``;
- trusted keys add up: those of the section and those of every ``--trust``.
"""

from __future__ import annotations

import configparser
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from kiln.common.addresses import CACHE_PORT, redact, with_credentials
from kiln.shacache.keys import KeyError_, SigningKey, TrustList, load_signing_key, split_trust_text


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting, its source and the fix."""


# --- Kinds: how the text of a setting becomes its value, and back ----------------------------


def _url(text: str) -> str:
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # not a number from 0 to 65535
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError(f"write an http:// or https:// URL, e.g. http://127.0.0.1:{CACHE_PORT}")
    return url


def _file(text: str) -> Path:
    path = Path(text.strip())
    if not path.is_file():
        raise ValueError("no such file")
    return path


def _bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        raise ValueError("write true or false")
    return word in ("true", "yes", "on", "1")


def _trust(text: str) -> tuple[str, ...]:
    """``name:base64`` keys and PEM certificates, or the path of a file of them."""
    candidate = text.strip()
    try:
        is_file = "\n" not in candidate and Path(candidate).is_file()
    except OSError:  # too long to be a file name: keys or certificates
        is_file = False
    if is_file:
        try:
            text = Path(candidate).read_text()
        except OSError as error:
            raise ValueError(f"cannot read it: {error.strerror}") from None
    elif "\n" not in candidate and ":" not in candidate:  # neither a key nor certificates
        raise ValueError("no such file, and not a key NAME:BASE64")
    try:
        TrustList.from_texts([text])  # every key and certificate is checked here, once
    except KeyError_ as problem:
        raise ValueError(
            f"{problem} (give a key NAME:BASE64, PEM certificates, or a file of them)"
        ) from None
    certificates, words = split_trust_text(text)
    return (*words, *certificates)


def _write_trust(tokens: tuple[str, ...]) -> str:
    # Keys on the first line, each certificate on continuation lines.
    keys = " ".join(token for token in tokens if "\n" not in token)
    return "\n".join([keys, *(token for token in tokens if "\n" in token)])


@dataclass(frozen=True)
class Kind:
    parse: Callable[[str], Any]  # raises ValueError saying what is wrong and what to write
    write: Callable[[Any], str]
    metavar: str | None = None  # what a flag of this kind takes, in --help
    adds_up: bool = False  # the values of every source are kept, not only the strongest


URL = Kind(_url, str, "URL")
FILE = Kind(_file, lambda path: str(path.resolve()), "FILE")  # absolute: buildout runs elsewhere
BOOL = Kind(_bool, lambda value: "true" if value else "false")
TEXT = Kind(str.strip, str, "TEXT")
TRUST = Kind(_trust, _write_trust, "KEY|FILE", adds_up=True)


# --- The table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    name: str  # the CacheConfig field (when there are options) and the key in ``flags``
    kind: Kind
    default: Any
    help: str
    options: tuple[str, ...] = ()  # [networkcache] options: all are read, the first written
    flags: tuple[str, ...] = ()
    env: str | None = None


SETTINGS: tuple[Setting, ...] = (
    # A base URL and its upload credentials: they set the four URLs below (see the docstring).
    Setting(
        "url", URL, None,
        "Base URL of a `kiln cache serve` (it serves /shacache and /shadir). Upload credentials"
        " go in $KILN_CACHE_USER and $KILN_CACHE_PASSWORD (a password in a URL flag is refused:"
        " ps shows it).",
        flags=("--cache",), env="KILN_CACHE_URL",
    ),
    Setting("user", TEXT, None, "Upload user for a base URL.", env="KILN_CACHE_USER"),
    Setting("password", TEXT, None, "Its password.", env="KILN_CACHE_PASSWORD"),
    Setting(
        "download_cache_url", URL, None, "Where blobs are downloaded: http://HOST:PORT/shacache.",
        options=("download-cache-url",),
    ),
    Setting(
        "download_dir_url", URL, None, "Where entries are looked up: http://HOST:PORT/shadir.",
        options=("download-dir-url",),
    ),
    Setting(
        "upload_cache_url", URL, None, "Where blobs are uploaded (credentials in the URL).",
        options=("upload-cache-url",),
    ),
    Setting(
        "upload_dir_url", URL, None, "Where signed entries are written.",
        options=("upload-dir-url",),
    ),
    Setting(
        "trusted_keys", TRUST, (),
        "A trusted key (name:base64), or a file of them and/or of PEM certificates. Repeatable."
        " Entries signed by no trusted key are never used.",
        options=("trusted-keys", "signature-certificate-list"), flags=("--trust", "--trusted-key"),
    ),
    Setting(
        "signing_key_file", FILE, None,
        "Secret key (kiln cache keygen) that signs new entries; without one, nothing is uploaded.",
        options=("signing-key-file",), flags=("--sign-with",), env="KILN_CACHE_SIGNING_KEY",
    ),
    Setting(
        "legacy_signing_key_file", FILE, None,
        "RSA secret key (PEM) whose signatures slapos.libnetworkcache verifies.",
        options=("signature-private-key-file",),
    ),
    Setting(
        "require_signature", BOOL, True, "Use and upload only signed entries.",
        options=("require-signature",),
    ),
    # kiln sends one client certificate to both services; the shadir-* names are read too.
    Setting(
        "client_cert_file", FILE, None,
        "TLS client certificate for uploads (kiln cache adduser NAME --cert).",
        options=("shacache-cert-file", "shadir-cert-file"), flags=("--client-cert",),
    ),
    Setting(
        "client_key_file", FILE, None, "The private key of the client certificate.",
        options=("shacache-key-file", "shadir-key-file"), flags=("--client-key",),
    ),
    Setting(
        "ca_file", FILE, None, "CA of an HTTPS cache.",
        options=("shacache-ca-file", "shadir-ca-file"), flags=("--ca-file",),
    ),
    Setting(
        "binary_cache", BOOL, True,
        "Cache built parts; with --no-binary-cache, use the cache for sources only and build"
        " every part.",
        options=("kiln-binary-cache",), flags=("--binary-cache/--no-binary-cache",),
    ),
    Setting(
        "source_root", TEXT, None,
        "The checkout the profiles come from: paths under it are normalised out of part"
        " signatures.",
        options=("kiln-source-root",),
    ),
)  # fmt: skip
BY_NAME = {setting.name: setting for setting in SETTINGS}
_URL_FIELDS = ("download_cache_url", "download_dir_url", "upload_cache_url", "upload_dir_url")


@dataclass(frozen=True, repr=False)
class CacheConfig:
    """A parsed cache configuration: one field for each setting that has options."""

    download_cache_url: str | None
    download_dir_url: str | None
    upload_cache_url: str | None
    upload_dir_url: str | None
    trusted_keys: tuple[str, ...]
    signing_key_file: Path | None
    legacy_signing_key_file: Path | None
    require_signature: bool
    client_cert_file: Path | None
    client_key_file: Path | None
    ca_file: Path | None
    binary_cache: bool
    source_root: str | None

    def __repr__(self) -> str:
        # Upload URLs may carry a password: a config that gets printed must not show it.
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown.update({name: redact(shown[name]) for name in _URL_FIELDS if shown[name]})
        return f"CacheConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def names_a_cache(self) -> bool:
        return any(getattr(self, name) for name in _URL_FIELDS)

    @property
    def signing_key_files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.signing_key_file, self.legacy_signing_key_file) if p)

    def trust(self) -> TrustList:
        return TrustList.from_texts(self.trusted_keys)

    def signing_keys(self) -> list[SigningKey]:
        return [load_signing_key(path) for path in self.signing_key_files]


# --- The parser ----------------------------------------------------------------------------

# Where a value came from, strongest first.
FLAG, SECTION, ENVIRONMENT, DEFAULT = range(4)


def service_urls(base: str, user: str | None = None, password: str | None = None) -> dict[str, str]:
    """The four URLs of the cache at ``base``, by field name: downloads without credentials,
    uploads with those of ``base`` or, when it has none, ``user`` and ``password``."""
    upload = base.rstrip("/")
    if user and password and urlsplit(upload).username is None:
        upload = with_credentials(upload, user, password)
    public = redact(upload)
    return {
        "download_cache_url": f"{public}/shacache",
        "download_dir_url": f"{public}/shadir",
        "upload_cache_url": f"{upload}/shacache",
        "upload_dir_url": f"{upload}/shadir",
    }


def _flag_texts(value: object) -> list[str]:
    """What click (or a caller) passed for a flag, as texts: nothing, one, or several."""
    if value is None:
        return []
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str | Path):
        return [str(value)]
    return [str(item) for item in value]  # a repeatable flag


def _sources(
    setting: Setting,
    section: Mapping[str, str],
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    defaults: Mapping[str, str],
) -> Iterator[tuple[int, str, str]]:
    """(rank, where, text) of every value given for ``setting``, the strongest first."""
    for text in _flag_texts(flags.get(setting.name)):
        yield FLAG, setting.flags[0], text
    for option in setting.options:
        if section.get(option, "").strip():  # SlapOS writes `option =` for "not set"
            yield SECTION, f"[networkcache] {option}", section[option]
    if setting.env and environ.get(setting.env, "").strip():
        yield ENVIRONMENT, f"${setting.env}", environ[setting.env]
    if setting.name in defaults:
        yield DEFAULT, "default", defaults[setting.name]


def _parse(setting: Setting, where: str, text: str) -> Any:
    try:
        return setting.kind.parse(text)
    except ValueError as problem:
        shown = text.strip().splitlines()[0] if text.strip() else text
        raise ConfigError(f"{where} {shown!r}: {problem}") from None


def _resolve(setting: Setting, sources: list[tuple[int, str, str]]) -> tuple[int, Any]:
    """The rank of the strongest source and the value: theirs, or the sum for lists."""
    if not sources:
        return DEFAULT, setting.default
    rank, where, text = sources[0]
    if not setting.kind.adds_up:
        return rank, _parse(setting, where, text)
    parsed = [_parse(setting, where, text) for _rank, where, text in sources]
    return rank, tuple(dict.fromkeys(item for value in parsed for item in value))


def parse_cache_config(
    section: Mapping[str, str] | None = None,
    *,
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
) -> CacheConfig:
    """The configuration that a ``[networkcache]`` section, flags and the environment give.

    ``flags`` maps setting names to what the command line gave (None or () when nothing);
    ``environ`` is read only when given; ``defaults`` replaces table defaults by text, as
    ``kiln cache`` does for its local URL.  Raises ConfigError naming the bad value.
    """
    found = {
        setting.name: _resolve(
            setting,
            list(_sources(setting, section or {}, flags or {}, environ or {}, defaults or {})),
        )
        for setting in SETTINGS
    }
    values = {name: value for name, (_rank, value) in found.items()}
    url_rank, base = found["url"]
    # The URL fields come from the section or from nowhere: a base URL replaces them when it
    # is a flag, or when the section names none.
    section_names_urls = any(found[name][0] == SECTION for name in _URL_FIELDS)
    if base and (url_rank == FLAG or not section_names_urls):
        values.update(service_urls(base, values["user"], values["password"]))
    for name in ("url", "user", "password"):
        del values[name]
    return CacheConfig(**values)


def read_networkcache(path: Path) -> dict[str, str]:
    """The ``[networkcache]`` section of an INI file such as SlapOS's slapos.cfg."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as stream:
            parser.read_file(stream)
    except (OSError, configparser.Error) as problem:
        raise ConfigError(f"cannot read {path}: {problem}") from None
    if not parser.has_section("networkcache"):
        raise ConfigError(f"{path} has no [networkcache] section")
    return dict(parser["networkcache"])


def load_cache_config(
    config_file: Path | None,
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    defaults: Mapping[str, str] | None = None,
) -> CacheConfig:
    """What a command's ``--config FILE`` (its ``[networkcache]`` section), its flags and the
    environment give, by the one parser; raises ConfigError."""
    section = read_networkcache(config_file) if config_file else {}
    return parse_cache_config(section, flags=flags, environ=environ, defaults=defaults)


# --- The writer ----------------------------------------------------------------------------


def networkcache_lines(config: CacheConfig) -> list[str]:
    """``option = value`` lines of a ``[networkcache]`` section that reads back as ``config``.

    Upload URLs keep their credentials: the caller writes these lines only to a file that its
    owner alone can read, and never prints them (``repr(config)`` hides them).
    """
    lines = []
    for setting in SETTINGS:
        value = getattr(config, setting.name) if setting.options else None
        if value is None or value == ():
            continue
        first, *continued = setting.kind.write(value).split("\n")
        lines.append(f"{setting.options[0]} = {first}".rstrip())
        lines.extend(f"    {line}" for line in continued)
    return lines


# --- Command-line flags --------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def _refuse_password_in_flag(
    context: click.Context, parameter: click.Parameter, value: str | None
) -> str | None:
    """A password in a URL on the command line is in every process listing (``ps``).

    Only flags are checked: the same URL in a ``[networkcache]`` file (SlapOS's format) or in
    ``$KILN_CACHE_URL`` is not shown to other users.
    """
    if value and urlsplit(value.strip()).password is not None:
        flag = parameter.opts[0] if parameter.opts else parameter.name
        raise click.BadParameter(
            f"{redact(value.strip())} with a password: a command line is visible to every user"
            " of the machine (ps). Give the URL without it and set $KILN_CACHE_USER and"
            " $KILN_CACHE_PASSWORD, or put the upload URL in a [networkcache] file (--config).",
            context,
            param_hint=flag,
        )
    return value


def cache_option(name: str, **overrides: Any) -> Callable[[F], F]:
    """The click option of setting ``name``, from its row.

    Click applies no default and reads no variable: the parser does, so that the section of a
    ``--config`` file comes between the two.
    """
    setting = BY_NAME[name]
    if setting.kind is URL:
        overrides = {"callback": _refuse_password_in_flag, **overrides}
    settings = {
        "default": None,
        "show_default": f"${setting.env}" if setting.env else False,
        "help": setting.help,
        "metavar": setting.kind.metavar,
        "multiple": setting.kind.adds_up,
    }
    return click.option(*setting.flags, name, **{**settings, **overrides})


def config_file_option(function: F) -> F:
    """``--config FILE``: a SlapOS-style ``[networkcache]`` section, for :func:`load_cache_config`
    (where upload URLs with their credentials can live, out of ``ps``)."""
    return click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Read a SlapOS-style [networkcache] section (its URLs replace $KILN_CACHE_URL;"
        " flags given beside it win).",
    )(function)
