"""Where Dask runs a transformation's work: threads here by default, or a dask.distributed
scheduler given by address, with no change to the transformations' code."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


class Compute:
    """``array(collection)`` computes a Dask array to numpy.

    Without an address, Dask's threaded scheduler in this process. With one
    (``tcp://host:port``), a ``distributed.Client`` connected on first use: the work goes to
    that cluster's workers (other processes or machines) and only the results come back.
    """

    def __init__(self, scheduler_address: str | None = None, threads: int | None = None) -> None:
        self.scheduler_address = scheduler_address
        self.threads = threads
        self._client: Any = None
        self._lock = threading.Lock()

    def array(self, collection: Any) -> np.ndarray:
        if self.scheduler_address is None:
            import dask  # here: the service starts without Dask (arrays/basics.py)

            return dask.compute(collection, scheduler="threads", num_workers=self.threads)[0]
        return self._connected().compute(collection, sync=True)

    def _connected(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from distributed import Client
                except ImportError:
                    raise RuntimeError(
                        "a Dask scheduler address needs the 'distributed' package: "
                        "pip install 'kiln[distributed]'"
                    ) from None
                self._client = Client(self.scheduler_address, timeout=30, set_as_default=False)
            return self._client

    @property
    def description(self) -> str:
        return self.scheduler_address or "threads"

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
