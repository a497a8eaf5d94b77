"""``python -m kiln.wendelin``: the same commands as ``kiln wendelin``."""

from kiln.wendelin.cli import wendelin

wendelin(prog_name="wendelin")
