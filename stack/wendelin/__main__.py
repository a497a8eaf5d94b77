"""``python -m wendelin``: the same commands as ``kiln wendelin``."""

from wendelin.cli import wendelin

wendelin(prog_name="wendelin")
