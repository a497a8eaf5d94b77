"""Small helpers that every `kiln` command group shares."""

from __future__ import annotations

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
