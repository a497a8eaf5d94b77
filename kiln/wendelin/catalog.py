"""The catalog of policies, reader accounts, streams and data arrays.

``Catalog`` is the seam: the service, the policy registry and the CLI only talk to this
interface, and get the implementation from ``open_catalog``. ``SQLiteCatalog`` is the embedded
implementation for one machine; a PostgreSQL one can replace it without touching the callers
(the SQL is plain and the methods are small transactions).

Stream statistics and array descriptions here are a periodically refreshed copy for listing;
the stream's own index and the array's Zarr metadata are the authority (see streams.py and
arrays/store.py).
"""

import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    name: str
    tag_pattern: str
    http_user: str
    password_hash: str
    forward_user_auth: bool
    anonymous_forward: bool
    created: float


@dataclass(frozen=True, slots=True)
class StreamRecord:
    name: str
    policy: str
    kind: str
    size: int
    entries: int
    first_time: float | None
    last_time: float | None
    last_ingest: float | None


@dataclass(frozen=True, slots=True)
class ArrayRecord:
    name: str
    policy: str | None
    dtype: str  # numpy dtype string, e.g. "<i2"
    shape: tuple[int, ...]  # stored as JSON text in SQL
    chunks: tuple[int, ...]  # JSON text
    attributes: dict  # JSON text
    source_stream: str | None
    source_start: int | None
    source_stop: int | None
    updated: float

    def to_row(self) -> tuple:
        """The arrays table's columns, in order (tuples and the dict as JSON text): one
        encoding for every catalog implementation."""
        return (
            self.name,
            self.policy,
            self.dtype,
            json.dumps(list(self.shape)),
            json.dumps(list(self.chunks)),
            json.dumps(self.attributes),
            self.source_stream,
            self.source_start,
            self.source_stop,
            self.updated,
        )

    @classmethod
    def from_row(cls, row: "tuple | list") -> "ArrayRecord":
        name, policy, dtype, shape, chunks, attributes, stream, start, stop, updated = row
        return cls(
            name,
            policy,
            dtype,
            tuple(json.loads(shape)),
            tuple(json.loads(chunks)),
            json.loads(attributes),
            stream,
            start,
            stop,
            updated,
        )


class AlreadyExists(ValueError):
    pass


class CatalogUnavailable(RuntimeError):
    """The catalog's database cannot be reached (a server catalog: down, refused, timed out)."""


class Catalog(ABC):
    """Where policies, reader accounts and the stream listing are kept, shared by the service
    and the CLI (another process). Each method is one small transaction; safe to call from
    several threads."""

    @abstractmethod
    def add_policy(self, policy: PolicyRecord) -> None:
        """Add a policy; AlreadyExists if its name (or HTTP user) is taken."""

    @abstractmethod
    def remove_policy(self, name: str) -> bool:
        """Remove a policy; False if there was none of that name."""

    @abstractmethod
    def policies(self) -> list[PolicyRecord]:
        """Every policy, by name."""

    @abstractmethod
    def add_reader(self, name: str, password_hash: str) -> None:
        """Add a reader account; AlreadyExists if its name is taken."""

    @abstractmethod
    def reader_hash(self, name: str) -> str | None:
        """The stored password hash of reader ``name``, if there is one."""

    @abstractmethod
    def save_stream(self, stream: StreamRecord) -> None:
        """Record a stream's latest statistics (added or replaced)."""

    @abstractmethod
    def streams(self) -> list[StreamRecord]:
        """Every stream recorded, by name."""

    @abstractmethod
    def save_array(self, array: ArrayRecord) -> None:
        """Record a data array's latest description (added or replaced)."""

    @abstractmethod
    def arrays(self) -> list[ArrayRecord]:
        """Every array recorded, by name."""

    @abstractmethod
    def remove_array(self, name: str) -> bool:
        """Forget an array; False if there was none of that name."""

    @abstractmethod
    def version(self) -> int:
        """A number that changes whenever another connection (the CLI) commits a change, so
        the service knows when to reload policies; cheap, it is asked on every lookup."""

    @abstractmethod
    def close(self) -> None: ...


CATALOG_URL_VARIABLE = "WENDELIN_CATALOG"
PASSWORD_FILE_VARIABLE = "WENDELIN_CATALOG_PASSWORD_FILE"


def open_catalog(root: str, url: str | None = None, password_file: str | None = None) -> Catalog:
    """The catalog of the service whose state is under ``root``.

    ``url`` (default: the environment's WENDELIN_CATALOG): empty for the embedded SQLite file
    under ``root``, or a ``postgresql://`` URL without a password; the password comes from
    ``password_file`` (a file only its owner may read; default WENDELIN_CATALOG_PASSWORD_FILE)
    or from libpq itself (PGPASSWORD, PGPASSFILE, ~/.pgpass). ValueError names a wrong setting.
    """
    url = os.environ.get(CATALOG_URL_VARIABLE) if url is None else url
    password_file = password_file or os.environ.get(PASSWORD_FILE_VARIABLE) or None
    if not url:
        if password_file:
            raise ValueError("a catalog password file is for a postgresql:// catalog only")
        return SQLiteCatalog(os.path.join(root, "catalog.sqlite"))
    from kiln.wendelin.catalog_postgres import PostgresCatalog, read_password_file

    password = read_password_file(password_file) if password_file else None
    return PostgresCatalog(url, password)


_SCHEMA = """
create table if not exists policies (
    name text primary key,
    tag_pattern text not null,
    http_user text not null unique,
    password_hash text not null,
    forward_user_auth integer not null,
    anonymous_forward integer not null,
    created real not null
);
create table if not exists readers (
    name text primary key,
    password_hash text not null,
    created real not null
);
create table if not exists streams (
    name text primary key,
    policy text not null,
    kind text not null,
    size integer not null,
    entries integer not null,
    first_time real,
    last_time real,
    last_ingest real
);
create table if not exists arrays (
    name text primary key,
    policy text,
    dtype text not null,
    shape text not null,
    chunks text not null,
    attributes text not null,
    source_stream text,
    source_start integer,
    source_stop integer,
    updated real not null
);
"""


class SQLiteCatalog(Catalog):
    """The embedded catalog: one SQLite file in WAL mode, shared by the service and the CLI."""

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._connection.execute("pragma journal_mode=wal")
            self._connection.execute("pragma busy_timeout=5000")
            self._connection.executescript(_SCHEMA)

    def _run(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._connection.execute(sql, parameters).fetchall()

    def add_policy(self, policy: PolicyRecord) -> None:
        try:
            self._run(
                "insert into policies values (?, ?, ?, ?, ?, ?, ?)",
                (
                    policy.name,
                    policy.tag_pattern,
                    policy.http_user,
                    policy.password_hash,
                    int(policy.forward_user_auth),
                    int(policy.anonymous_forward),
                    policy.created,
                ),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"policy {policy.name!r} already exists") from None

    def remove_policy(self, name: str) -> bool:
        with self._lock:
            cursor = self._connection.execute("delete from policies where name = ?", (name,))
            return cursor.rowcount > 0

    def policies(self) -> list[PolicyRecord]:
        rows = self._run("select * from policies order by name")
        return [
            PolicyRecord(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), row[6])
            for row in rows
        ]

    def add_reader(self, name: str, password_hash: str) -> None:
        try:
            self._run("insert into readers values (?, ?, ?)", (name, password_hash, time.time()))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"reader {name!r} already exists") from None

    def reader_hash(self, name: str) -> str | None:
        rows = self._run("select password_hash from readers where name = ?", (name,))
        return rows[0][0] if rows else None

    def save_stream(self, stream: StreamRecord) -> None:
        self._run(
            "insert or replace into streams values (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stream.name,
                stream.policy,
                stream.kind,
                stream.size,
                stream.entries,
                stream.first_time,
                stream.last_time,
                stream.last_ingest,
            ),
        )

    def streams(self) -> list[StreamRecord]:
        return [StreamRecord(*row) for row in self._run("select * from streams order by name")]

    def save_array(self, array: ArrayRecord) -> None:
        self._run(
            "insert or replace into arrays values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", array.to_row()
        )

    def arrays(self) -> list[ArrayRecord]:
        return [
            ArrayRecord.from_row(row) for row in self._run("select * from arrays order by name")
        ]

    def remove_array(self, name: str) -> bool:
        with self._lock:
            cursor = self._connection.execute("delete from arrays where name = ?", (name,))
            return cursor.rowcount > 0

    def version(self) -> int:
        # SQLite's data_version changes when another connection commits, for free.
        return self._run("pragma data_version")[0][0]

    def close(self) -> None:
        with self._lock:
            self._connection.close()
