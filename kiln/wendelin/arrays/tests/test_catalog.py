"""Arrays in the catalog: a refreshed copy of the store's descriptions, for listings."""

import asyncio

import numpy as np
import pytest

from kiln.wendelin.arrays import Provenance
from kiln.wendelin.catalog import ArrayRecord, SQLiteCatalog
from kiln.wendelin.service import Service

pytestmark = pytest.mark.unit


def test_sqlite_catalog_saves_lists_and_removes_arrays(tmp_path):
    catalog = SQLiteCatalog(str(tmp_path / "catalog.sqlite"))
    record = ArrayRecord("b", "p", "<f4", (10, 3), (100, 3), {"unit": "V"}, "s", 0, 40, 1.0)
    catalog.save_array(record)
    catalog.save_array(ArrayRecord("a", None, "|u1", (0,), (4096,), {}, None, None, None, 2.0))
    assert [array.name for array in catalog.arrays()] == ["a", "b"]
    assert catalog.arrays()[1] == record
    catalog.save_array(ArrayRecord("b", "p", "<f4", (20, 3), (100, 3), {}, "s", 0, 80, 3.0))
    assert catalog.arrays()[1].shape == (20, 3)
    assert catalog.remove_array("b") and not catalog.remove_array("b")
    assert [array.name for array in catalog.arrays()] == ["a"]
    catalog.close()


def test_service_refreshes_the_catalog_from_the_store(tmp_path):
    service = Service(str(tmp_path))
    array = service.arrays.create("pcm", "<i2", policy="audio", source=Provenance("wav", 44, 44))
    array.append(np.ones(5, "<i2"), consumed=54)
    service.arrays.create("gone", "f4")
    service.sync_array_catalog()
    [_, pcm] = service.catalog.arrays()
    assert (pcm.name, pcm.policy, pcm.dtype, pcm.shape) == ("pcm", "audio", "<i2", (5,))
    assert (pcm.source_stream, pcm.source_start, pcm.source_stop) == ("wav", 44, 54)
    service.arrays.remove("gone")
    asyncio.run(service.close())  # a last refresh on the way out
    catalog = SQLiteCatalog(str(tmp_path / "catalog.sqlite"))
    assert [array.name for array in catalog.arrays()] == ["pcm"]
