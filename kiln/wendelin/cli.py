"""`kiln wendelin`: run and administer the data platform."""

import asyncio
import datetime
import json
import logging
import math
import os
import sys
from pathlib import Path

import click

from kiln.common.addresses import FORWARD_PORT, WENDELIN_HTTP_PORT, parse_host_port
from kiln.common.cli import limit_option
from kiln.wendelin.catalog import AlreadyExists
from kiln.wendelin.catalog_options import catalog_options, open_cli_catalog
from kiln.wendelin.options import ROOT_OPTION
from kiln.wendelin.policies import PolicyRegistry, hash_password
from kiln.wendelin.record_time import TimeKey
from kiln.wendelin.service import Limits
from kiln.wendelin.static import DygraphsMissing, find_dygraphs
from kiln.wendelin.transform import cli as transform_cli

_LIMITS = Limits()  # the defaults of the serve options that set limits


def _registry(root: str) -> PolicyRegistry:
    private_files(root)
    return PolicyRegistry(root, open_cli_catalog(root))


def private_files(root: str) -> None:
    """Files this process creates are its user's only, and those under ``root`` too.

    The catalog holds password hashes and the streams hold the data: readable by every
    local user (0644) they were readable to anyone with a shell on the machine.
    """
    os.umask(0o077)
    os.makedirs(root, exist_ok=True)
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o700)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):  # never follow a link out of root
                os.chmod(path, 0o600)


@click.group()
def wendelin() -> None:
    """The data platform: ingestion policies, fluentd-compatible ingest, data streams."""


@wendelin.command()
@ROOT_OPTION
@catalog_options
@click.option(
    "--listen",
    default=f"127.0.0.1:{WENDELIN_HTTP_PORT}",
    show_default=True,
    help="HOST:PORT for HTTP: fluentd ingest, /tags, the stream API and web pages.",
)
@click.option(
    "--forward-listen",
    default=f"127.0.0.1:{FORWARD_PORT}",
    show_default=True,
    help="HOST:PORT for the fluentd forward protocol; 'off' to disable.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    help="PEM certificate: serve HTTP over TLS (HTTPS), so Basic passwords never cross the "
    "network in clear. Off by default: the default --listen is 127.0.0.1.",
)
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM key for it.")
@click.option(
    "--forward-tls-cert",
    type=click.Path(dir_okay=False),
    help="PEM certificate: serve the forward protocol over TLS (fluentd <transport tls>).",
)
@click.option("--forward-tls-key", type=click.Path(dir_okay=False), help="PEM key for it.")
@limit_option(
    "--max-chunk-mib",
    64,
    "Largest HTTP chunk or forward message; larger ones get 413 or a closed connection.",
)
@limit_option(
    "--max-queued-mib",
    256,
    "Memory for HTTP bodies being received, and again for data waiting for the disk; "
    "past either, new data gets 503 + Retry-After (overload) until it drains.",
)
@limit_option(
    "--dedup-retention-hours",
    168.0,
    "How long a committed chunk is remembered, so its resend is not appended again.",
    minimum=0.1,
)
@limit_option(
    "--max-connections",
    _LIMITS.max_connections,
    "Open HTTP connections at once; past it new ones are closed (logged).",
)
@limit_option(
    "--max-forward-connections",
    _LIMITS.max_forward_connections,
    "Open forward connections at once; past it new ones are closed (logged).",
)
@limit_option(
    "--header-timeout",
    _LIMITS.header_timeout,
    "Seconds a new HTTP connection has to send its first request head (slowloris).",
    minimum=0.1,
)
@limit_option(
    "--handshake-timeout",
    _LIMITS.handshake_timeout,
    "Seconds from connecting to a completed forward handshake; reads do not extend it.",
    minimum=0.1,
)
@limit_option(
    "--max-handshake-kib",
    _LIMITS.max_handshake_bytes >> 10,
    "Forward bytes accepted before the handshake (a PING is well under 1 KiB).",
)
@limit_option(
    "--max-compressed-members",
    _LIMITS.max_members,
    "gzip members or zstd frames in one forward message.",
)
@limit_option(
    "--max-streams-per-policy",
    _LIMITS.max_streams_per_policy,
    "Streams one policy may create; a new tag past it is refused (403).",
)
@limit_option(
    "--max-open-streams",
    _LIMITS.max_open_streams,
    "Streams whose files stay open at once; idle ones are closed and reopened on use.",
)
@limit_option(
    "--max-record-depth",
    _LIMITS.max_record_depth,
    "Levels of maps and arrays in a record; deeper records are refused (400).",
)
@limit_option(
    "--max-page-entries",
    _LIMITS.max_page_entries,
    "Entries in one page of GET /api/streams/<name>/entries (more: X-Next-Start).",
)
@limit_option(
    "--max-series-entries",
    _LIMITS.max_series_entries,
    "Entries one GET /api/streams/<name>/series reads; a window holding more is answered "
    "from its first ones, marked incomplete (zoom in for the rest).",
)
@limit_option(
    "--max-series-buckets",
    _LIMITS.max_series_buckets,
    "Points per field in one GET /api/streams/<name>/series (more asked: this many).",
)
@click.option(
    "--dygraphs",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    envvar="WENDELIN_DYGRAPHS",
    help="Directory holding dygraph.min.js and dygraph.min.css (the dist/ of npm's dygraphs "
    "package; the release's dygraphs part) for the pages' charts (env WENDELIN_DYGRAPHS). "
    "Default: the checkout's kiln/wendelin/frontend/node_modules after `npm ci --prefix "
    "kiln/wendelin/frontend`; without either the pages show no charts.",
)
@limit_option(
    "--max-slice-mib",
    _LIMITS.max_slice_bytes >> 20,
    "Largest slice of an array in one GET /api/arrays/<name>/data (.npy); more: 413.",
)
@limit_option(
    "--max-json-values",
    _LIMITS.max_json_values,
    "Values in one array slice asked as JSON (about 20 bytes each); more: 413.",
)
@limit_option(
    "--max-window-buckets",
    _LIMITS.max_window_buckets,
    "Buckets of one GET /api/arrays/<name>/window; more: 400.",
)
@limit_option(
    "--max-array-upload-mib",
    _LIMITS.max_array_upload_bytes >> 20,
    "Largest .npy body of an array PUT or append (held in memory to check); more: 413.",
)
@limit_option(
    "--cpu-queue",
    _LIMITS.cpu_queue,
    "Jobs waiting per worker pool (decompression, large reads); past it: 503 + "
    "Retry-After, or a forward connection closed without ack.",
    minimum=0,
)
@limit_option(
    "--password-queue",
    _LIMITS.password_queue,
    "Password checks (scrypt, one at a time) waiting; past it: 503 + Retry-After.",
    minimum=0,
)
@click.option(
    "--time-key",
    default="time",
    show_default=True,
    help="Record key holding the event time on /tags and out_http posts (fluentd in_http's "
    "time_key): removed from the record and used as its time; '' to stamp arrival times.",
)
@click.option(
    "--keep-time-key",
    is_flag=True,
    help="Leave the --time-key field in the record too (fluentd's keep_time_key).",
)
@click.option(
    "--dask-scheduler",
    envvar="WENDELIN_DASK_SCHEDULER",
    help="tcp://HOST:PORT of a dask.distributed scheduler to run transformations on (needs "
    "the 'distributed' extra); by default Dask threads in this process (env "
    "WENDELIN_DASK_SCHEDULER).",
)
@limit_option(
    "--transform-batch-mib",
    16,
    "Stream bytes one transformation step reads (bounds its memory); see `transform --help`.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def serve(
    root: str,
    listen: str,
    forward_listen: str,
    tls_cert: str | None,
    tls_key: str | None,
    forward_tls_cert: str | None,
    forward_tls_key: str | None,
    max_chunk_mib: int,
    max_queued_mib: int,
    dedup_retention_hours: float,
    max_connections: int,
    max_forward_connections: int,
    header_timeout: float,
    handshake_timeout: float,
    max_handshake_kib: int,
    max_compressed_members: int,
    max_streams_per_policy: int,
    max_open_streams: int,
    max_record_depth: int,
    max_page_entries: int,
    max_series_entries: int,
    max_series_buckets: int,
    dygraphs: Path | None,
    max_slice_mib: int,
    max_json_values: int,
    max_window_buckets: int,
    max_array_upload_mib: int,
    cpu_queue: int,
    password_queue: int,
    time_key: str,
    keep_time_key: bool,
    dask_scheduler: str | None,
    transform_batch_mib: int,
    verbose: bool,
) -> None:
    """Serve HTTP and the forward protocol from one process, with state under --root.

    Every acknowledgement (HTTP 204, forward ack) means the data is fsynced. SIGTERM stops
    accepting (503), commits what is queued, and exits.
    """
    from kiln.wendelin.server import serve as run
    from kiln.wendelin.server import tls_context
    from kiln.wendelin.service import RootInUse
    from kiln.wendelin.transform.runner import TransformSettings

    private_files(root)
    catalog = open_cli_catalog(root)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # `kiln` set up quieter logging; a service logs one line per request
    )
    limits = Limits(
        max_chunk_bytes=max_chunk_mib << 20,
        max_pending_bytes=max_queued_mib << 20,
        max_receiving_bytes=max_queued_mib << 20,
        dedup_retention=dedup_retention_hours * 3600,
        max_connections=max_connections,
        max_forward_connections=max_forward_connections,
        header_timeout=header_timeout,
        handshake_timeout=handshake_timeout,
        max_handshake_bytes=max_handshake_kib << 10,
        max_members=max_compressed_members,
        max_streams_per_policy=max_streams_per_policy,
        max_open_streams=max_open_streams,
        max_record_depth=max_record_depth,
        max_page_entries=max_page_entries,
        max_series_entries=max_series_entries,
        max_series_buckets=max_series_buckets,
        max_slice_bytes=max_slice_mib << 20,
        max_json_values=max_json_values,
        max_window_buckets=max_window_buckets,
        max_array_upload_bytes=max_array_upload_mib << 20,
        cpu_queue=cpu_queue,
        password_queue=password_queue,
        time_key=TimeKey(time_key or None, keep_time_key),
    )
    try:
        http_address = parse_host_port(listen, WENDELIN_HTTP_PORT)
        forward = None if forward_listen == "off" else parse_host_port(forward_listen, FORWARD_PORT)
    except ValueError as problem:
        raise click.BadParameter(str(problem)) from None
    try:
        dygraphs = find_dygraphs(dygraphs)
    except DygraphsMissing as problem:
        raise click.BadParameter(str(problem), param_hint="--dygraphs") from None
    try:
        asyncio.run(
            run(
                root,
                http_address,
                forward,
                limits,
                http_tls=tls_context(tls_cert, tls_key),
                forward_tls=tls_context(forward_tls_cert, forward_tls_key),
                catalog=catalog,
                transforms=TransformSettings(
                    scheduler_address=dask_scheduler, batch_bytes=transform_batch_mib << 20
                ),
                dygraphs=dygraphs,
            )
        )
    except (RootInUse, OSError) as problem:
        raise click.ClickException(str(problem)) from None


@wendelin.group()
def policy() -> None:
    """Ingestion policies: credentials and the tags each one accepts."""


@policy.command("add")
@ROOT_OPTION
@catalog_options
@click.argument("name")
@click.option(
    "--tag-pattern",
    default="**",
    show_default=True,
    help="fluentd <match> pattern of the tags accepted: '*' one part, '**' any, {a,b}.",
)
@click.option(
    "--forward-user-auth",
    is_flag=True,
    help="Also require the forward <user> (same name and password as HTTP).",
)
@click.option(
    "--anonymous-forward",
    is_flag=True,
    help="Accept forward clients that skip the handshake (fluent-logger). Insecure.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the credentials as JSON.")
def policy_add(
    root: str,
    name: str,
    tag_pattern: str,
    forward_user_auth: bool,
    anonymous_forward: bool,
    as_json: bool,
) -> None:
    """Create policy NAME and print its generated credentials (shown only this once)."""
    try:
        credentials = _registry(root).add(name, tag_pattern, forward_user_auth, anonymous_forward)
    except (AlreadyExists, ValueError) as problem:
        raise click.ClickException(str(problem)) from None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "policy": name,
                    "user": credentials.http_user,
                    "password": credentials.http_password,
                    "shared_key": credentials.shared_key,
                }
            )
        )
        return
    click.echo(f"policy:      {name} (tags: {tag_pattern})")
    click.echo(f"user:        {credentials.http_user}")
    click.echo(f"password:    {credentials.http_password}")
    click.echo(f"shared_key:  {credentials.shared_key}")
    click.echo("Keep these: the password is stored only as a hash.")


@policy.command("list")
@ROOT_OPTION
@catalog_options
def policy_list(root: str) -> None:
    """List policies (names, users and tag patterns; never secrets)."""
    for record in _registry(root).catalog.policies():
        flags = [
            flag
            for flag, on in (
                ("forward-user-auth", record.forward_user_auth),
                ("anonymous-forward", record.anonymous_forward),
            )
            if on
        ]
        click.echo(
            f"{record.name}\tuser={record.http_user}\ttags={record.tag_pattern}\t{','.join(flags)}"
        )


@policy.command("remove")
@ROOT_OPTION
@catalog_options
@click.argument("name")
def policy_remove(root: str, name: str) -> None:
    """Remove policy NAME: its credentials stop working; its streams stay."""
    if not _registry(root).remove(name):
        raise click.ClickException(f"no policy named {name!r}")


policy.add_command(transform_cli.policy_transform)


@wendelin.group()
def reader() -> None:
    """Reader accounts: read every stream (API, web pages, Python client), write none."""


@reader.command("add")
@ROOT_OPTION
@catalog_options
@click.argument("name")
def reader_add(root: str, name: str) -> None:
    """Create reader NAME and print its generated password."""
    import secrets

    password = secrets.token_urlsafe(24)
    try:
        _registry(root).catalog.add_reader(name, hash_password(password))
    except AlreadyExists as problem:
        raise click.ClickException(str(problem)) from None
    click.echo(f"user:      {name}\npassword:  {password}")


@wendelin.group()
def stream() -> None:
    """Data streams."""


@stream.command("list")
@ROOT_OPTION
@catalog_options
def stream_list(root: str) -> None:
    """Streams with sizes, entry counts and times (as of the service's last catalog sync)."""
    for record in _registry(root).catalog.streams():
        click.echo(
            f"{record.name}\tpolicy={record.policy}\tkind={record.kind}\tsize={record.size}"
            f"\tentries={record.entries}\tfirst_time={_iso(record.first_time)}"
            f"\tlast_time={_iso(record.last_time)}\tlast_ingest={_iso(record.last_ingest)}"
        )


def _iso(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="milliseconds")


wendelin.add_command(transform_cli.transform)
wendelin.add_command(transform_cli.status)
