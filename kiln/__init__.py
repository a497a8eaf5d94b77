"""kiln: build, cache, run, bake and validate software releases."""

__version__ = "0.1.0"
