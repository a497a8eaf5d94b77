"""The catalog interface's contract, held by both implementations: the embedded SQLite one and
the PostgreSQL one against a real server (kiln.testing.postgres)."""

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.testing.postgres import PostgresServer
from kiln.wendelin.catalog import (
    AlreadyExists,
    ArrayRecord,
    Catalog,
    CatalogUnavailable,
    PolicyRecord,
    SQLiteCatalog,
    StreamRecord,
    open_catalog,
)

Opener = Callable[[], Catalog]


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.unit),
        pytest.param("postgresql", marks=pytest.mark.integration),
    ]
)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens one more connection to a fresh catalog (several: the service and the CLI)."""
    opened: list[Catalog] = []

    def open_one() -> Catalog:
        if request.param == "sqlite":
            catalog: Catalog = SQLiteCatalog(str(tmp_path / "catalog.sqlite"))
        else:
            from kiln.wendelin.catalog_postgres import PostgresCatalog

            # No caching of version(): the contract asks for the change, not when.
            catalog = PostgresCatalog(url, server.password, version_ttl=0.0)
        opened.append(catalog)
        return catalog

    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database()
    request.addfinalizer(lambda: [catalog.close() for catalog in opened])
    return open_one


def policy(name: str, user: str | None = None) -> PolicyRecord:
    return PolicyRecord(name, "sensor.**", user or f"{name}-abc", "scrypt$hash", True, False, 1.5)


def test_policies_are_added_listed_by_name_and_removed(opener: Opener) -> None:
    catalog = opener()
    catalog.add_policy(policy("b"))
    catalog.add_policy(policy("a"))
    assert catalog.policies() == [policy("a"), policy("b")]
    with pytest.raises(AlreadyExists, match="'a' already exists"):
        catalog.add_policy(policy("a", user="other"))
    with pytest.raises(AlreadyExists):  # the HTTP user is unique too
        catalog.add_policy(policy("c", user="a-abc"))
    assert catalog.remove_policy("a") is True
    assert catalog.remove_policy("a") is False
    assert catalog.policies() == [policy("b")]


def test_readers(opener: Opener) -> None:
    catalog = opener()
    assert catalog.reader_hash("ada") is None
    catalog.add_reader("ada", "scrypt$1")
    assert catalog.reader_hash("ada") == "scrypt$1"
    with pytest.raises(AlreadyExists):
        catalog.add_reader("ada", "scrypt$2")
    assert catalog.reader_hash("ada") == "scrypt$1"


def test_streams_are_added_and_replaced(opener: Opener) -> None:
    catalog = opener()
    empty = StreamRecord("sensor.b", "p", "entries", 0, 0, None, None, None)
    catalog.save_stream(empty)
    first = StreamRecord("sensor.a", "p", "raw", 2**40, 7, 1_700_000_000.5, 1_700_000_001.25, 3.0)
    catalog.save_stream(first)
    assert catalog.streams() == [first, empty]
    grown = StreamRecord("sensor.b", "p", "entries", 10, 1, 1.0, 1.0, 2.0)
    catalog.save_stream(grown)
    assert opener().streams() == [first, grown]


def test_arrays_are_added_replaced_and_removed(opener: Opener) -> None:
    catalog = opener()
    pcm = ArrayRecord(
        "wav.pcm", "audio", "<i2", (48_000, 2), (65_536, 2), {"rate": 48_000, "unit": "Pa"},
        "recording.wav", 0, 1_000_044, 1_700_000_000.5,
    )  # fmt: skip
    spectrum = ArrayRecord("fft", None, "<f8", (0,), (1024,), {}, None, None, None, 2.0)
    catalog.save_array(spectrum)
    catalog.save_array(pcm)
    assert catalog.arrays() == [spectrum, pcm]
    longer = ArrayRecord(
        "wav.pcm", "audio", "<i2", (96_000, 2), (65_536, 2), {"rate": 48_000},
        "recording.wav", 0, 2_000_044, 1_700_000_001.0,
    )  # fmt: skip
    catalog.save_array(longer)
    assert opener().arrays() == [spectrum, longer]
    assert catalog.remove_array("fft") is True
    assert catalog.remove_array("fft") is False
    assert catalog.arrays() == [longer]


def test_the_version_moves_when_another_connection_changes_policies_or_readers(
    opener: Opener,
) -> None:
    service, cli = opener(), opener()
    before = service.version()
    assert service.version() == before  # nothing changed
    cli.add_policy(policy("late"))
    after_add = service.version()
    assert after_add != before
    cli.add_reader("ada", "scrypt$1")
    after_reader = service.version()
    assert after_reader != after_add
    cli.remove_policy("late")
    assert service.version() != after_reader
    assert service.policies() == [] and service.reader_hash("ada") == "scrypt$1"


def test_several_threads_share_one_catalog(opener: Opener) -> None:
    catalog = opener()

    def save(thread: int) -> None:
        for number in range(25):
            name = f"s{thread}.{number:02}"
            catalog.save_stream(
                StreamRecord(name, "p", "entries", number, number, None, None, None)
            )
            catalog.version()

    threads = [threading.Thread(target=save, args=(thread,)) for thread in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(catalog.streams()) == 100


# -- PostgreSQL only: settings, passwords, caching, a server that goes away ----------------------


@pytest.mark.integration
def test_postgresql_is_chosen_by_url_with_the_password_from_a_private_file(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiln.wendelin.catalog_postgres import PostgresCatalog

    url = postgres_server.new_database()
    secret = postgres_server.write_password_file(tmp_path / "password")
    catalog = open_catalog(str(tmp_path), url, str(secret))
    assert isinstance(catalog, PostgresCatalog)
    catalog.add_reader("ada", "scrypt$1")
    catalog.close()
    # The same from the environment, as `kiln wendelin` reads it; nothing under the root.
    monkeypatch.setenv("WENDELIN_CATALOG", url)
    monkeypatch.setenv("WENDELIN_CATALOG_PASSWORD_FILE", str(secret))
    catalog = open_catalog(str(tmp_path))
    assert catalog.reader_hash("ada") == "scrypt$1"
    catalog.close()
    assert not (tmp_path / "catalog.sqlite").exists()
    # libpq's own variables work too (PGPASSWORD here; PGPASSFILE and ~/.pgpass alike).
    monkeypatch.delenv("WENDELIN_CATALOG_PASSWORD_FILE")
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    open_catalog(str(tmp_path)).close()


@pytest.mark.integration
def test_wrong_settings_are_refused_with_what_to_do(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = postgres_server.new_database()
    in_url = url.replace("kiln@", f"kiln:{postgres_server.password}@")
    with pytest.raises(ValueError, match="must not hold the password"):
        open_catalog(str(tmp_path), in_url)
    with pytest.raises(ValueError, match="postgresql:// URL"):
        open_catalog(str(tmp_path), "mysql://db/x")
    secret = postgres_server.write_password_file(tmp_path / "password")
    os.chmod(secret, 0o644)
    with pytest.raises(ValueError, match=r"readable by no one else \(mode 0644\): chmod 600"):
        open_catalog(str(tmp_path), url, str(secret))
    os.chmod(secret, 0o600)
    secret.write_text("wrong\n")
    with pytest.raises(CatalogUnavailable, match="password authentication failed"):
        open_catalog(str(tmp_path), url, str(secret))
    with pytest.raises(CatalogUnavailable, match="unavailable"):
        open_catalog(str(tmp_path), "postgresql://kiln@/x?host=/nonexistent", str(secret))


@pytest.mark.integration
def test_version_is_read_at_most_once_per_ttl_and_at_once_after_own_writes(
    postgres_server: PostgresServer,
) -> None:
    from kiln.wendelin.catalog_postgres import PostgresCatalog

    url, password = postgres_server.new_database(), postgres_server.password
    service = PostgresCatalog(url, password, version_ttl=0.5)
    cli = PostgresCatalog(url, password)
    before = service.version()
    cli.add_policy(policy("late"))
    seen = time.monotonic()
    while service.version() == before:
        assert time.monotonic() - seen < 2.0, "the CLI's change was not seen"
        time.sleep(0.05)
    own = service.version()
    service.add_policy(policy("mine"))
    assert service.version() != own  # its own write: at once, no waiting for the TTL
    service.close()
    cli.close()


@pytest.mark.integration
def test_lookups_keep_working_from_memory_while_the_database_is_unreachable(
    postgres_server: PostgresServer,
) -> None:
    """The connection is cut from the server side (as a restart or a network cut would):
    lookups answer from what was read, writes say the database is unavailable, and the next
    call once it answers again reconnects."""
    import psycopg

    from kiln.wendelin.catalog_postgres import PostgresCatalog

    url, password = postgres_server.new_database(), postgres_server.password
    catalog = PostgresCatalog(url, password, version_ttl=0.0)
    catalog.add_reader("ada", "scrypt$1")
    version = catalog.version()
    assert catalog.reader_hash("ada") == "scrypt$1"
    with psycopg.connect(url, password=password, autocommit=True) as admin:
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where application_name = 'kiln-wendelin' and datname = current_database()"
        )
    # The broken connection is noticed on use; the lookup answers from memory.
    assert catalog.reader_hash("ada") == "scrypt$1"
    assert catalog.version() == version  # reconnected (or kept), never raised
    catalog.add_reader("bob", "scrypt$2")  # reconnected
    assert catalog.reader_hash("bob") == "scrypt$2"
    catalog.close()
