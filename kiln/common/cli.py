"""Small helpers that every `kiln` command group shares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import click


def fail(message: str) -> NoReturn:
    """Stop the command with a message that names the bad input and what to do."""
    raise click.ClickException(message)


def parse_pairs(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """``("a=1", "b=x=y")`` -> ``{"a": "1", "b": "x=y"}``; a pair without ``=`` is an error."""
    result = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"{option} {pair!r}: write NAME=VALUE")
        result[name] = value
    return result


def limit_option(flag: str, default: float, help: str, minimum: float = 1) -> Callable:
    """A server limit as a click option: a number no lower than ``minimum``, default shown.

    Every limit of every server is declared the same way, so ``--help`` reads alike.
    """
    kind = (
        click.FloatRange(min=minimum)
        if isinstance(default, float)
        else click.IntRange(min=int(minimum))
    )
    return click.option(flag, type=kind, default=default, show_default=True, help=help)


def directory_option(flag: str, help: str, **extra: object) -> Callable:
    """A directory given on the command line, as a Path (it need not exist yet)."""
    return click.option(flag, type=click.Path(file_okay=False, path_type=Path), help=help, **extra)
