"""The umbrella `kiln` command.

Each concern owns its command group in its own folder; this module only mounts them,
so adding a group is one line in ``GROUPS``.
"""

from __future__ import annotations

import importlib
import logging

import click

# name -> "module:attribute" of a click group.  Imported lazily so that `kiln cache ...`
# does not pay for importing the data platform, and a broken group does not break the others.
GROUPS: dict[str, str] = {
    "cache": "kiln.shacache.cli:cache",
    "wendelin": "kiln.wendelin.cli:wendelin",
    "software": "kiln.software.cli:software",
    "instance": "kiln.software.cli:instance",
    "monitor": "kiln.monitor.cli:monitor",
    "image": "kiln.images.cli:image",
}


class LazyGroups(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(GROUPS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in GROUPS:
            module_name, attribute = GROUPS[name].split(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroups, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.version_option(package_name="kiln")
def main(verbose: int) -> None:
    """kiln builds software releases through a signed binary cache and runs them.

    Every concern is a command group that lives with its code:

    \b
      kiln cache      the ShaCache/ShaDir binary cache        (kiln/shacache)
      kiln software   build releases through it               (kiln/software)
      kiln instance   run built releases under supervisor     (kiln/software)
      kiln wendelin   the data platform: ingest and streams   (kiln/wendelin)
      kiln monitor    samples, promises, the monitor page     (kiln/monitor)
      kiln image      bake, boot-test and ship VM images      (kiln/images)

    Run `kiln GROUP --help` for details.

    \b
    The embedded default, on one machine:
      kiln software build software/wendelin && kiln instance up software/wendelin
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
