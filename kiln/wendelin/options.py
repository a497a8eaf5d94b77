"""Options several `kiln wendelin` command modules share."""

import click

ROOT_OPTION = click.option(
    "--root",
    type=click.Path(file_okay=False),
    envvar="WENDELIN_ROOT",
    required=True,
    help="Directory holding the catalog, secrets and streams (env WENDELIN_ROOT).",
)
