"""The CLI's catalog settings: ``--catalog URL`` and ``--catalog-password-file FILE`` (or their
environment variables), for every `kiln wendelin` command that opens the catalog."""

from collections.abc import Callable

import click

from kiln.wendelin.catalog import (
    CATALOG_URL_VARIABLE,
    PASSWORD_FILE_VARIABLE,
    Catalog,
    CatalogUnavailable,
    open_catalog,
)


def _remember(context: click.Context, parameter: click.Parameter, value: object) -> object:
    context.meta[f"wendelin.{parameter.name}"] = value
    return value


def catalog_options(command: Callable[..., None]) -> Callable[..., None]:
    """--catalog and --catalog-password-file, for every command that opens the catalog; read
    by ``open_cli_catalog`` (so the commands' own parameters stay as they are)."""
    command = click.option(
        "--catalog-password-file",
        envvar=PASSWORD_FILE_VARIABLE,
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=_remember,
        help="File holding the catalog database's password, readable by its owner only "
        f"(0600) (env {PASSWORD_FILE_VARIABLE}). Without it libpq looks in PGPASSWORD, "
        "PGPASSFILE and ~/.pgpass.",
    )(command)
    return click.option(
        "--catalog",
        envvar=CATALOG_URL_VARIABLE,
        metavar="URL",
        expose_value=False,
        callback=_remember,
        help="Keep policies, readers and listings in PostgreSQL: a postgresql:// URL without "
        "a password, e.g. postgresql://wendelin@db.example/wendelin?sslmode=verify-full (env "
        f"{CATALOG_URL_VARIABLE}). Default: the embedded SQLite file under --root.",
    )(command)


def open_cli_catalog(root: str) -> Catalog:
    """The catalog that --catalog and --catalog-password-file name; their errors as a
    one-line message."""
    meta = click.get_current_context().meta
    try:
        return open_catalog(
            root, meta.get("wendelin.catalog") or "", meta.get("wendelin.catalog_password_file")
        )
    except (ValueError, CatalogUnavailable) as problem:
        raise click.ClickException(str(problem)) from None
