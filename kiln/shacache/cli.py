"""`kiln cache`: run, administer and use a ShaCache + ShaDir binary cache."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from kiln.common.addresses import CACHE_PORT, parse_host_port, redact
from kiln.common.cli import fail, limit_option, parse_pairs
from kiln.common.durable import write_atomically
from kiln.common.serving import ConnectionLimits
from kiln.shacache.client import CacheClient, CacheError
from kiln.shacache.config import (
    CacheConfig,
    ConfigError,
    cache_option,
    config_file_option,
    load_cache_config,
    parse_cache_config,
)
from kiln.shacache.entries import InvalidEntry, is_sha512
from kiln.shacache.gc import collect
from kiln.shacache.keys import (
    KeyError_,
    check_legacy_safe_name,
    generate_ed25519_key,
    generate_legacy_rsa_key,
    rsa_private_pem,
    write_secret_file,
)
from kiln.shacache.server import (
    DEFAULT_AUTH_POOL,
    DEFAULT_DIR_POOL,
    DEFAULT_MAX_BLOB,
    PoolSize,
    ServerConfig,
    serve,
)
from kiln.shacache.storage import open_stores
from kiln.shacache.units import human_size, parse_duration, parse_size
from kiln.shacache.users import CertificateAuthority, UserDatabase, UserError

DEFAULT_ROOT = "var/shacache"
DEFAULT_LISTEN = f"127.0.0.1:{CACHE_PORT}"
DEFAULT_URL = f"http://{DEFAULT_LISTEN}"
FIRST_USER = "uploader"
# Where the first start of an empty root leaves the upload user's password (mode 0600): a
# password printed to stdout lands in service logs and journals.
INITIAL_CREDENTIAL = "initial-upload-credential"
_LIMITS = ConnectionLimits()


def private_umask() -> None:
    """Files and directories made from now on are the owner's alone (blobs, entries, users,
    CA key): a cache may be private (--private), and its users and keys always are."""
    os.umask(0o077)


root_option = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("KILN_CACHE_ROOT", DEFAULT_ROOT),
    show_default=f"$KILN_CACHE_ROOT or {DEFAULT_ROOT}",
    help="Directory holding the blobs, entries, users and certificate authority.",
)


@click.group()
def cache() -> None:
    """The signed binary cache: ShaCache (blobs by sha512) and ShaDir (signed entries).

    \b
    Start a cache and use it:
      kiln cache serve                        # prints its URL; credential in ROOT/initial-*
      kiln cache keygen alice                 # alice.key (secret) + alice.pub (trust this)
      kiln cache upload FILE --key pypi:foo=1 --sign-with alice.key --meta python=3.11
      kiln cache lookup pypi:foo=1 --trust alice.pub
      kiln cache download --key pypi:foo=1 --trust alice.pub -o foo.tar.gz

    The real slapos.libnetworkcache works against `kiln cache serve` unchanged.
    """


# --- Server ----------------------------------------------------------------------------------


def _split_listen(listen: str) -> tuple[str, int]:
    try:
        return parse_host_port(listen)
    except ValueError as problem:
        fail(f"--listen {problem}")


@cache.command("serve")
@root_option
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "--max-size",
    default=human_size(DEFAULT_MAX_BLOB).replace(" ", "").replace("iB", ""),
    show_default=True,
    help="Largest blob accepted (larger uploads get 413), e.g. 512M or 8G.",
)
@cache_option(
    "trusted_keys",
    help="Refuse entries that no trusted key signed: a key (name:base64), or a file of them"
    " and/or of PEM certificates. Repeatable.",
)
@click.option(
    "--require-signed",
    is_flag=True,
    help="Refuse entries that carry no signature (by default they are stored, as the reference"
    " servers do; clients ignore entries no key they trust signed).",
)
# Unsigned entries are stored by default now: the old flag is accepted and changes nothing.
@click.option("--allow-unsigned", is_flag=True, hidden=True)
@limit_option(
    "--header-timeout",
    _LIMITS.header_timeout,
    "Seconds a client has to send a whole request head (and an idle keep-alive lasts);"
    " slower clients are disconnected.",
    minimum=0.1,
)
@limit_option(
    "--max-connections",
    _LIMITS.max_connections,
    "Open connections at most; past it, new ones get 503 + Retry-After and are closed.",
)
@limit_option(
    "--auth-workers",
    DEFAULT_AUTH_POOL.workers,
    "Threads that check passwords (scrypt, ~16 MiB each).",
)
@limit_option(
    "--auth-queue",
    DEFAULT_AUTH_POOL.queue,
    "Password checks waiting at most; past it, requests get 503 + Retry-After.",
    minimum=0,
)
@limit_option(
    "--dir-workers",
    DEFAULT_DIR_POOL.workers,
    "Threads that read and encode ShaDir entry lists.",
)
@limit_option(
    "--dir-queue",
    DEFAULT_DIR_POOL.queue,
    "ShaDir reads waiting at most; past it, they get 503 + Retry-After.",
    minimum=0,
)
@click.option("--private", is_flag=True, help="Require credentials for downloads too.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--tls-client-ca",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Also accept client certificates signed by this CA (the root's own CA always counts).",
)
def serve_command(
    root: Path,
    listen: str,
    max_size: str,
    trusted_keys: tuple[str, ...],
    require_signed: bool,
    allow_unsigned: bool,
    header_timeout: float,
    max_connections: int,
    auth_workers: int,
    auth_queue: int,
    dir_workers: int,
    dir_queue: int,
    private: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: tuple[str, ...],
) -> None:
    """Run the cache server on ROOT.

    \b
    Blobs:   POST /shacache, PUT|GET|HEAD /shacache/<sha512>
    Entries: PUT|GET /shadir/<key>
    Health:  GET /health

    Uploads need credentials.  On the first start of an empty ROOT, an upload user is
    created and its password written to ROOT/initial-upload-credential (readable by the
    owner only); add more with `kiln cache adduser`.  Every file the server makes is
    readable by its owner only (umask 077).
    """
    if bool(tls_cert) != bool(tls_key):
        fail("--tls-cert and --tls-key go together")
    if require_signed and allow_unsigned:
        fail("--require-signed and --allow-unsigned contradict each other: give one")
    private_umask()
    try:
        # The server's trust list is read as every client's is, by the one parser.
        trust = parse_cache_config(flags={"trusted_keys": trusted_keys}).trust()
        config = ServerConfig(
            root=root,
            max_blob_size=parse_size(max_size),
            require_signature=require_signed,
            trust=trust if trusted_keys else None,
            private=private,
            tls_cert=Path(tls_cert) if tls_cert else None,
            tls_key=Path(tls_key) if tls_key else None,
            tls_client_ca=[Path(p) for p in tls_client_ca],
            limits=ConnectionLimits(header_timeout, max_connections),
            auth_pool=PoolSize(auth_workers, auth_queue),
            dir_pool=PoolSize(dir_workers, dir_queue),
        )
    except (ValueError, KeyError_) as problem:
        fail(str(problem))
    host, port = _split_listen(listen)
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    users = UserDatabase(config.users_path)
    root.mkdir(parents=True, exist_ok=True)
    credential = root / INITIAL_CREDENTIAL
    if not users.names():
        write_credential(credential, FIRST_USER, users.add(FIRST_USER))

    def ready(url: str) -> None:
        click.echo(f"kiln cache serving {root} at {url}")
        click.echo(f"  ShaCache: {url}/shacache   ShaDir: {url}/shadir")
        if credential.exists():
            click.echo(
                f"  upload credential of user {FIRST_USER!r}: in {credential} (owner-only;"
                " `set -a; . FILE` exports it for `kiln cache upload`; delete it once stored"
                " elsewhere)"
            )
        click.echo("  Ctrl-C stops it.", nl=True)
        sys.stdout.flush()

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(config, host, port, ready)

    try:
        asyncio.run(main())
    except OSError as problem:
        fail(f"cannot listen on {listen}: {problem.strerror}")


def write_credential(path: Path, user: str, password: str) -> None:
    """The credential as shell variable assignments, in a file only its owner can read."""
    text = (
        "# kiln cache upload credential: keep it secret, delete this file once stored.\n"
        f"KILN_CACHE_USER={user}\nKILN_CACHE_PASSWORD={password}\n"
    )
    write_atomically(path, text.encode(), mode=0o600)


@cache.command("adduser")
@click.argument("name")
@root_option
@click.option(
    "--cert",
    is_flag=True,
    help="Issue a TLS client certificate (what slapos.libnetworkcache uses) instead of a password.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="With --cert: where to write NAME.crt, NAME.key and ca.pem.",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the credential to this new file (mode 0600, KILN_CACHE_USER=... lines) instead"
    " of printing the password: for scripts whose output is logged.",
)
def adduser_command(
    name: str, root: Path, cert: bool, out: Path, password_file: Path | None
) -> None:
    """Create an upload user and print its generated credential.

    Only a hash of the password is stored; it cannot be shown again.  The password is
    printed for the operator who asked for it; with --password-file it goes to a private
    file instead.
    """
    private_umask()
    if password_file is not None and password_file.exists():
        fail(f"--password-file {password_file} exists; refusing to overwrite it")
    if cert:
        ca = CertificateAuthority(root / "ca")
        cert_path, key_path = ca.issue(name, out, client=True)
        ca_copy = out / "ca.pem"
        if ca_copy.resolve() != ca.cert_path.resolve():
            ca_copy.write_bytes(ca.cert_path.read_bytes())
        click.echo(f"client certificate for {name!r}: {cert_path}")
        click.echo(f"private key: {key_path} (keep it secret)")
        click.echo(f"CA certificate: {ca_copy} (the server trusts it when serving TLS)")
        click.echo(
            "In slapos.cfg [networkcache]: shacache-cert-file / shadir-cert-file = the"
            " certificate, shacache-key-file / shadir-key-file = the key."
        )
        return
    try:
        password = UserDatabase(root / "users.json").add(name)
    except UserError as problem:
        fail(str(problem))
    if password_file is not None:
        write_credential(password_file, name, password)
        click.echo(f"user {name!r} created; credential written to {password_file} (mode 0600)")
        return
    click.echo(f"user {name!r} created; password (shown once): {password}")


@cache.command("deluser")
@click.argument("name")
@root_option
def deluser_command(name: str, root: Path) -> None:
    """Remove an upload user."""
    try:
        UserDatabase(root / "users.json").remove(name)
    except UserError as problem:
        fail(str(problem))
    click.echo(f"user {name!r} removed")


@cache.command("servercert")
@root_option
@click.option("--host", "hosts", multiple=True, required=True, help="Name or IP the server has.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=".")
def servercert_command(root: Path, hosts: tuple[str, ...], out: Path) -> None:
    """Issue a TLS server certificate from the root's CA (for --tls-cert / --tls-key)."""
    private_umask()
    ca = CertificateAuthority(root / "ca")
    cert_path, key_path = ca.issue(hosts[0], out, client=False, hosts=list(hosts))
    click.echo(f"server certificate: {cert_path}\nkey: {key_path}\nCA: {ca.cert_path}")


@cache.command("gc")
@root_option
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option(
    "--older-than",
    default="24h",
    show_default=True,
    help="Keep unreferenced blobs younger than this (uploads whose entry is not written yet).",
)
def gc_command(root: Path, dry_run: bool, older_than: str) -> None:
    """Remove blobs that no ShaDir entry references."""
    try:
        age = parse_duration(older_than)
    except ValueError as problem:
        fail(str(problem))
    blobs, dirs = open_stores(root)
    report = collect(blobs, dirs, min_age_seconds=age, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for sha512 in report.removed:
        click.echo(f"{verb} {sha512[:16]}...")
    click.echo(
        f"{verb} {len(report.removed)} blob(s), {human_size(report.freed_bytes)};"
        f" kept {report.kept} referenced, {report.too_young} younger than {older_than}"
    )


# --- Keys ------------------------------------------------------------------------------------


@cache.command("keygen")
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option(
    "--legacy-rsa",
    is_flag=True,
    help="Make an RSA key + X.509 certificate that slapos.libnetworkcache accepts"
    " (signature-private-key-file / signature-certificate-list).",
)
@click.option(
    "--slapos-incompatible",
    is_flag=True,
    help="Accept a name (3, 7, 11... letters) whose signatures make slapos.libnetworkcache"
    " 0.30 fail on the whole ShaDir key: only for caches no SlapOS node reads.",
)
def keygen_command(name: str, out: Path, legacy_rsa: bool, slapos_incompatible: bool) -> None:
    """Make a signing key pair named NAME.

    Ed25519 (default): NAME.key is the secret (mode 0600), NAME.pub the public key
    `NAME:base64` that clients trust.
    """
    try:
        if not legacy_rsa and not slapos_incompatible:
            # slapos.libnetworkcache 0.30 decodes every signature field as one base64 text,
            # uncaught: some names make that raise and hide every entry of the key from it.
            check_legacy_safe_name(name)
        if legacy_rsa:
            key = generate_legacy_rsa_key(name)
            write_secret_file(out / f"{name}.key", rsa_private_pem(key))
            assert key.certificate_pem
            (out / f"{name}.crt").write_text(key.certificate_pem)
            click.echo(f"secret key: {out / (name + '.key')}")
            click.echo(f"certificate (trust this): {out / (name + '.crt')}")
            return
        ed_key = generate_ed25519_key(name)
        write_secret_file(out / f"{name}.key", ed_key.secret_text + "\n")
    except FileExistsError as problem:
        fail(f"{problem.filename} exists; refusing to overwrite a key")
    except KeyError_ as problem:
        fail(str(problem))
    (out / f"{name}.pub").write_text(ed_key.public_text + "\n")
    click.echo(f"secret key: {out / (name + '.key')}")
    click.echo(f"public key (trust this): {ed_key.public_text}")


# --- Client ----------------------------------------------------------------------------------


def client_options(function: Any) -> Any:
    options = [
        cache_option("url", show_default=f"$KILN_CACHE_URL or {DEFAULT_URL}"),
        config_file_option,
        cache_option("trusted_keys"),
        cache_option("signing_key_file"),
        cache_option("client_cert_file"),
        cache_option("client_key_file"),
        cache_option("ca_file"),
        click.option(
            "--progress/--no-progress", default=None, help="Progress bars (default: on a terminal)."
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def client_config(config_file: Path | None, **flags: Any) -> CacheConfig:
    """What --config, the flags and the environment describe, by the one parser."""
    try:
        return load_cache_config(config_file, flags, os.environ, {"url": DEFAULT_URL})
    except ConfigError as problem:
        fail(str(problem))


def make_client(config_file: Path | None, progress: bool | None, **flags: Any) -> CacheClient:
    """The client of :func:`client_config`."""
    config = client_config(config_file, **flags)
    try:
        return CacheClient.from_config(config, progress=progress)
    except KeyError_ as problem:
        fail(str(problem))


@cache.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", help="ShaDir key to index the file under (e.g. pypi:name=1.0).")
@click.option("--meta", multiple=True, help="Entry metadata NAME=VALUE (a string). Repeatable.")
@client_options
def upload_command(file: Path, key: str | None, meta: tuple[str, ...], **client: Any) -> None:
    """Upload FILE to ShaCache and, with --key, add a signed ShaDir entry for it.

    Credentials: set $KILN_CACHE_USER and $KILN_CACHE_PASSWORD, or put an upload URL with
    them in a [networkcache] file (--config), or use --client-cert/--client-key.  A URL
    with a password on the command line is refused: every user sees it in `ps`.
    """
    metadata = parse_pairs(meta, "--meta")
    cache_client = make_client(**client)
    try:
        sha512 = cache_client.upload(file, key, metadata)
    except (CacheError, InvalidEntry) as problem:
        fail(str(problem))
    click.echo(sha512)


@cache.command("download")
@click.argument("sha512", required=False)
@click.option("--key", help="Download the newest trusted entry under this ShaDir key.")
@click.option("--select", "wanted", multiple=True, help="Only entries whose NAME equals VALUE.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@client_options
def download_command(
    sha512: str | None, key: str | None, wanted: tuple[str, ...], output: Path, **client: Any
) -> None:
    """Download a blob by SHA512, or the newest trusted entry of --key, and verify it."""
    if bool(sha512) == bool(key):
        fail("give either a SHA512 or --key KEY")
    cache_client = make_client(**client)
    try:
        if key:
            entries = cache_client.select(key, parse_pairs(wanted, "--select"))
            if not entries:
                fail(
                    f"no trusted entry under {key!r} matches; `kiln cache lookup {key}` shows"
                    " every entry and why it is not trusted"
                )
            sha512 = entries[0]["sha512"]
        assert sha512 is not None
        if not is_sha512(sha512):
            fail(f"{sha512[:40]!r} is not a sha512 (128 lowercase hex characters)")
        cache_client.download(sha512, output)
    except (CacheError, InvalidEntry) as problem:
        fail(str(problem))
    click.echo(f"{output}: {sha512[:16]}... verified")


@cache.command("lookup")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@client_options
def lookup_command(key: str, as_json: bool, **client: Any) -> None:
    """Show every entry under KEY, newest first, whether it is trusted, and why.

    Exits with status 1 when KEY has no entry.
    """
    cache_client = make_client(**client)
    try:
        reports = cache_client.lookup(key)
    except (CacheError, InvalidEntry) as problem:
        fail(str(problem))
    if not reports:
        fail(f"no entry under key {key!r} at {redact(cache_client.download_dir_url or '')}")
    if as_json:
        rows = [{"metadata": r.metadata, "trusted": r.trusted, "reason": r.reason} for r in reports]
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    for number, report in enumerate(reports, 1):
        mark = (
            click.style("trusted", fg="green")
            if report.trusted
            else click.style("UNTRUSTED", fg="red")
        )
        click.echo(f"#{number} {mark}: {report.reason}")
        for name, value in sorted((report.metadata or {}).items()):
            click.echo(f"    {name}: {value}")
