"""The catalog in a PostgreSQL database: ``kiln wendelin serve --catalog postgresql://...``.

The same tables as the embedded SQLite catalog (catalog.py), created on first use, plus a
one-row ``catalog_version`` counter that triggers on ``policies`` and ``readers`` bump in the
same transaction as the change. ``version()`` is asked on every policy lookup, so it reads
that counter at most once per ``version_ttl`` (1 s): a policy or reader added or removed by
the CLI is seen by the service within a second, and a change made through this object at
once. Reader hashes are cached until the counter moves.

The database is reached through libpq (psycopg 3). The password never travels in a URL or
argv: it is given from a file only its owner can read (``read_password_file``), or libpq
finds it itself (PGPASSWORD, PGPASSFILE, ~/.pgpass). If the database goes away, lookups keep
the policies and readers last read (ingest goes on), writes raise ``CatalogUnavailable``,
and the next call reconnects.
"""

import dataclasses
import logging
import os
import stat
import threading
import time
from collections.abc import Sequence

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from kiln.wendelin.catalog import (
    AlreadyExists,
    ArrayRecord,
    Catalog,
    CatalogUnavailable,
    PolicyRecord,
    StreamRecord,
)

log = logging.getLogger(__name__)

URL_SCHEMES = ("postgresql://", "postgres://")
# Two processes (the service and the CLI) may create the schema at once: one at a time.
_SCHEMA_LOCK = 0x6B696C6E_77656E64  # "kilnwend"
_SCHEMA = (
    """create table if not exists policies (
        name text primary key,
        tag_pattern text not null,
        http_user text not null unique,
        password_hash text not null,
        forward_user_auth boolean not null,
        anonymous_forward boolean not null,
        created double precision not null
    )""",
    """create table if not exists readers (
        name text primary key,
        password_hash text not null,
        created double precision not null
    )""",
    """create table if not exists streams (
        name text primary key,
        policy text not null,
        kind text not null,
        size bigint not null,
        entries bigint not null,
        first_time double precision,
        last_time double precision,
        last_ingest double precision
    )""",
    """create table if not exists arrays (
        name text primary key,
        policy text,
        dtype text not null,
        shape text not null,
        chunks text not null,
        attributes text not null,
        source_stream text,
        source_start bigint,
        source_stop bigint,
        updated double precision not null
    )""",
    """create table if not exists catalog_version (
        only_row boolean primary key default true check (only_row),
        value bigint not null
    )""",
    "insert into catalog_version values (true, 0) on conflict do nothing",
    """create or replace function wendelin_catalog_changed() returns trigger
        language plpgsql as $$
        begin
            update catalog_version set value = value + 1;
            return null;
        end $$""",
    # PostgreSQL 14 or later (create or replace trigger); Debian 12 has 15.
    """create or replace trigger policies_changed
        after insert or update or delete or truncate on policies
        for each statement execute function wendelin_catalog_changed()""",
    """create or replace trigger readers_changed
        after insert or update or delete or truncate on readers
        for each statement execute function wendelin_catalog_changed()""",
)
_STREAM_COLUMNS = "name, policy, kind, size, entries, first_time, last_time, last_ingest"
_ARRAY_COLUMNS = (
    "name, policy, dtype, shape, chunks, attributes, source_stream, source_start, source_stop, "
    "updated"
)


def check_url(url: str) -> dict[str, str]:
    """The libpq parameters of a ``postgresql://`` URL; ValueError if it is not one, or if it
    holds a password (visible in ``ps``, in logs and in shell histories)."""
    if not url.startswith(URL_SCHEMES):
        raise ValueError(
            f"the catalog must be a postgresql:// URL (or empty for the embedded SQLite "
            f"catalog), not {url.split(':', 1)[0]!r}..."
        )
    try:
        parameters = conninfo_to_dict(url)
    except psycopg.ProgrammingError as problem:
        raise ValueError(f"malformed catalog URL: {problem}") from None
    if "password" in parameters:
        raise ValueError(
            "the catalog URL must not hold the password (it would show in the process list): "
            "give it with --catalog-password-file (a 0600 file), PGPASSFILE or ~/.pgpass"
        )
    return {key: str(value) for key, value in parameters.items()}


def read_password_file(path: str) -> str:
    """The password in ``path`` (its first line); ValueError unless only its owner, this
    process's user, can read it."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as problem:
        raise ValueError(f"cannot read the catalog password file: {problem}") from None
    with os.fdopen(descriptor) as stream:
        status = os.fstat(stream.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"catalog password file {path} is not a regular file")
        if status.st_uid != os.geteuid() or status.st_mode & 0o077:
            raise ValueError(
                f"catalog password file {path} must be owned by this user and readable by "
                f"no one else (mode {stat.S_IMODE(status.st_mode):04o}): chmod 600 it"
            )
        password = stream.readline().rstrip("\r\n")
    if not password:
        raise ValueError(f"catalog password file {path} is empty")
    return password


class PostgresCatalog(Catalog):
    """The catalog in a PostgreSQL database; one connection, one statement at a time."""

    def __init__(self, url: str, password: str | None = None, version_ttl: float = 1.0) -> None:
        parameters = check_url(url)
        self._url = url
        self._timeout_given = "connect_timeout" in parameters
        self._password = password
        self.where = "{user}@{host}/{dbname}".format_map(
            {"user": "", "host": "", "dbname": "", **parameters}
        )  # for messages: never the password
        self._lock = threading.Lock()
        self._connection: psycopg.Connection | None = None
        self._version_ttl = version_ttl
        self._version_expires = 0.0
        self._readers: dict[str, str] = {}
        self._readers_version: int | None = None
        with self._lock:
            connection = self._connected()
            try:
                with connection.transaction():
                    connection.execute("select pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    for statement in _SCHEMA:
                        connection.execute(statement)
            except psycopg.OperationalError as problem:
                raise self._unavailable(problem) from None
        self._version = self._read_version()

    # -- connection ---------------------------------------------------------------------------

    def _connected(self) -> psycopg.Connection:
        """The connection, opened again if it was lost (call with the lock held)."""
        if self._connection is not None and not self._connection.closed:
            return self._connection
        options: dict[str, object] = {"autocommit": True, "application_name": "kiln-wendelin"}
        if self._password is not None:
            options["password"] = self._password
        if not self._timeout_given:
            options["connect_timeout"] = 10
        try:
            self._connection = psycopg.connect(self._url, **options)  # type: ignore[arg-type]
        except psycopg.OperationalError as problem:
            raise self._unavailable(problem) from None
        return self._connection

    def _unavailable(self, problem: Exception) -> CatalogUnavailable:
        if self._connection is not None:
            self._connection.close()  # a broken connection: the next call opens a new one
        detail = str(problem).strip().splitlines()[0] if str(problem).strip() else problem
        return CatalogUnavailable(f"catalog database {self.where} unavailable: {detail}")

    def _execute(self, sql: str, parameters: Sequence[object] = ()) -> tuple[list[tuple], int]:
        """(rows, rowcount) of one statement, in its own transaction."""
        with self._lock:
            connection = self._connected()
            try:
                cursor = connection.execute(sql, parameters)  # type: ignore[arg-type]
                rows = cursor.fetchall() if cursor.description else []
                return rows, cursor.rowcount
            except psycopg.OperationalError as problem:
                raise self._unavailable(problem) from None

    def _rows(self, sql: str, parameters: Sequence[object] = ()) -> list[tuple]:
        return self._execute(sql, parameters)[0]

    def _changed(self) -> None:
        """This object changed policies or readers: read the counter again on the next ask."""
        self._version_expires = 0.0

    # -- policies and readers -----------------------------------------------------------------

    def add_policy(self, policy: PolicyRecord) -> None:
        try:
            self._execute(
                "insert into policies values (%s, %s, %s, %s, %s, %s, %s)",
                (
                    policy.name,
                    policy.tag_pattern,
                    policy.http_user,
                    policy.password_hash,
                    policy.forward_user_auth,
                    policy.anonymous_forward,
                    policy.created,
                ),
            )
        except errors.UniqueViolation:
            raise AlreadyExists(f"policy {policy.name!r} already exists") from None
        self._changed()

    def remove_policy(self, name: str) -> bool:
        removed = self._execute("delete from policies where name = %s", (name,))[1] > 0
        self._changed()
        return removed

    def policies(self) -> list[PolicyRecord]:
        return [PolicyRecord(*row) for row in self._rows("select * from policies order by name")]

    def add_reader(self, name: str, password_hash: str) -> None:
        try:
            self._execute(
                "insert into readers values (%s, %s, %s)", (name, password_hash, time.time())
            )
        except errors.UniqueViolation:
            raise AlreadyExists(f"reader {name!r} already exists") from None
        self._changed()

    def reader_hash(self, name: str) -> str | None:
        # Asked for every request of a reader: from memory, read again when the counter moves.
        version = self.version()
        if version != self._readers_version:
            try:
                self._readers = dict(self._rows("select name, password_hash from readers"))
                self._readers_version = version
            except CatalogUnavailable:
                if self._readers_version is None:
                    raise
                log.warning("catalog unavailable; using the reader accounts last read")
        return self._readers.get(name)

    # -- listings ------------------------------------------------------------------------------

    def save_stream(self, stream: StreamRecord) -> None:
        self._upsert("streams", _STREAM_COLUMNS, dataclasses.astuple(stream))

    def streams(self) -> list[StreamRecord]:
        rows = self._rows(f"select {_STREAM_COLUMNS} from streams order by name")
        return [StreamRecord(*row) for row in rows]

    def save_array(self, array: ArrayRecord) -> None:
        self._upsert("arrays", _ARRAY_COLUMNS, array.to_row())

    def arrays(self) -> list[ArrayRecord]:
        rows = self._rows(f"select {_ARRAY_COLUMNS} from arrays order by name")
        return [ArrayRecord.from_row(row) for row in rows]

    def remove_array(self, name: str) -> bool:
        return self._execute("delete from arrays where name = %s", (name,))[1] > 0

    def _upsert(self, table: str, columns: str, values: tuple) -> None:
        """Insert a row, or replace the one of the same name (its first column)."""
        names = columns.split(", ")
        updates = ", ".join(f"{column} = excluded.{column}" for column in names[1:])
        placeholders = ", ".join(["%s"] * len(names))
        self._execute(
            f"insert into {table} ({columns}) values ({placeholders}) "
            f"on conflict (name) do update set {updates}",
            values,
        )

    # -- change counter ------------------------------------------------------------------------

    def version(self) -> int:
        now = time.monotonic()
        if now < self._version_expires:
            return self._version
        try:
            self._version = self._read_version()
        except CatalogUnavailable as problem:
            # Keep serving with what was read last; try again after the same delay.
            log.warning("%s; keeping the policies last read", problem)
        self._version_expires = now + self._version_ttl
        return self._version

    def _read_version(self) -> int:
        return self._rows("select value from catalog_version")[0][0]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
