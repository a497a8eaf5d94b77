"""What a service imports at start: an appliance's first boot runs on an emulated CPU, where
numpy, Zarr, Dask and SciPy take tens of seconds to import (images/README.md, first boot).
They load at the first array or transformation instead."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numpy", "zarr", "dask", "scipy", "zc.buildout")


def imported_after(*modules: str) -> set[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.unit
@pytest.mark.parametrize(
    "module",
    [
        "kiln.wendelin.server",  # kiln wendelin serve
        "kiln.wendelin.cli",  # kiln wendelin policy add, at every instance's first start
        "kiln.monitor.service",  # kiln monitor serve
        "kiln.images.guest",  # kiln image guest up / ready
        "kiln.software.instance",
    ],
)
def test_starting_a_service_imports_no_heavy_library(module):
    loaded = imported_after(module)
    assert not [name for name in HEAVY if name in loaded]


@pytest.mark.unit
def test_the_arrays_load_at_first_use(tmp_path):
    from kiln.wendelin.arrays.basics import LazyArrayStore

    arrays = LazyArrayStore(str(tmp_path / "arrays"))
    assert not arrays.holds_arrays()
    assert arrays.names() == []  # opens the real store
    assert type(arrays.opened()).__name__ == "ArrayStore"
