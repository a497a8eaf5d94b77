"""A TCP proxy on 127.0.0.1 that breaks one large response, to force resumed downloads.

It forwards bytes unchanged (TLS included) and, on the first connection whose answer grows
past ``cut_after`` bytes, closes both sides there, as a broken network would; with ``stall``,
it holds the connection open and sends nothing more instead, as a hung network does (the
client then waits until it is killed).  ``answered`` counts the bytes sent back to clients.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress


class CuttingProxy:
    def __init__(self, upstream_port: int, cut_after: int | None, stall: bool = False) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after  # None: forward everything
        self.stall = stall
        self.cuts = 0
        self.answered = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _should_cut(self, sent: int) -> bool:
        with self._lock:
            if self.cut_after is not None and self.cuts == 0 and sent >= self.cut_after:
                self.cuts += 1
                return True
        return False

    def _pipe(self, source: socket.socket, sink: socket.socket, is_answer: bool) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if is_answer and self._should_cut(sent + len(data)):
                    assert self.cut_after is not None
                    prefix = data[: max(self.cut_after - sent, 0)]
                    sink.sendall(prefix)
                    self._count(prefix)
                    if self.stall:
                        self._stopped.wait()
                    break
                sink.sendall(data)
                sent += len(data)
                if is_answer:
                    self._count(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _count(self, data: bytes) -> None:
        with self._lock:
            self.answered += len(data)
