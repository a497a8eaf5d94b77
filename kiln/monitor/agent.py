"""Samples of the machine and of every supervisor program of the instances on it (psutil).

One :class:`Agent` keeps what rates and CPU percentages need between two samples (counters,
``psutil.Process`` objects), so each sample costs a few reads of /proc and one XML-RPC call
per instance to its supervisord (over its unix socket; no supervisorctl process).
"""

from __future__ import annotations

import configparser
import glob
import json
import os
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from supervisor.xmlrpc import SupervisorTransport

from kiln.monitor.parameters import tag_part

MIB = 1 << 20


def instance_roots(patterns: list[str]) -> list[Path]:
    """Instance directories (holding etc/kiln-instance.json) matched by ``patterns``."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        for match in sorted(glob.glob(os.path.expanduser(pattern))):
            root = Path(match).resolve()
            if (root / "etc" / "kiln-instance.json").is_file():
                found[root] = None
    return list(found)


def supervisor_socket(root: Path) -> str | None:
    """The unix socket of the instance's supervisord, from its configuration."""
    try:
        description = json.loads((root / "etc" / "kiln-instance.json").read_text())
        parser = configparser.RawConfigParser()
        parser.read(description["supervisord-conf"])
        return parser.get("unix_http_server", "file")
    except (OSError, ValueError, KeyError, configparser.Error):
        return None


class SupervisorUnavailable(Exception):
    pass


def supervisor_proxy(root: Path) -> xmlrpc.client.ServerProxy:
    """XML-RPC to the instance's supervisord, over its unix socket (as supervisorctl does)."""
    socket_path = supervisor_socket(root)
    if socket_path is None or not os.path.exists(socket_path):
        raise SupervisorUnavailable(f"no supervisord socket in {root} (instance down?)")
    transport = SupervisorTransport(None, None, f"unix://{socket_path}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def program_infos(root: Path) -> list[dict]:
    """supervisord's getAllProcessInfo for the instance: name, pid, statename, start, ..."""
    try:
        return supervisor_proxy(root).supervisor.getAllProcessInfo()  # type: ignore[return-value]
    except (OSError, xmlrpc.client.Error) as error:
        raise SupervisorUnavailable(f"supervisord of {root} does not answer: {error}") from error


def restart_program(root: Path, name: str) -> bool:
    """Restart program ``name`` if the instance's supervisord runs it; answer whether it did."""
    try:
        proxy = supervisor_proxy(root)
        info = proxy.supervisor.getProcessInfo(name)
        if info["statename"] in ("RUNNING", "STARTING", "BACKOFF"):  # type: ignore[index]
            proxy.supervisor.stopProcess(name, True)
        proxy.supervisor.startProcess(name, False)
    except (SupervisorUnavailable, OSError, xmlrpc.client.Error):
        return False  # not running yet: supervisord starts it with the new configuration
    return True


@dataclass
class _Counters:
    at: float
    disk_read: int
    disk_write: int
    net_recv: int
    net_sent: int


@dataclass
class _Program:
    start: int = 0
    restarts: int = 0
    processes: dict[int, psutil.Process] = field(default_factory=dict)


def _rate(new: int, old: int, seconds: float) -> float:
    return max(new - old, 0) / seconds if seconds > 0 else 0.0


class Agent:
    """Takes samples; ``sample()`` answers ``[(tag, record), ...]`` for one round."""

    def __init__(self, hostname: str, watch: list[str], disk_path: str = "/") -> None:
        self.hostname = hostname
        self.watch = watch
        self.disk_path = disk_path
        self._counters: _Counters | None = None
        self._programs: dict[tuple[Path, str], _Program] = {}
        self.infos: dict[Path, list[dict] | SupervisorUnavailable] = {}
        psutil.cpu_percent(interval=None)  # the first call only starts the measure

    @property
    def system_tag(self) -> str:
        return f"monitor.{self.hostname}.system"

    def program_tag(self, root: Path, program: str) -> str:
        return f"monitor.{self.hostname}.{tag_part(root.name)}.{tag_part(program)}"

    def sample(self) -> list[tuple[str, dict]]:
        samples = [(self.system_tag, self.system())]
        found: dict[Path, list[dict] | SupervisorUnavailable] = {}
        for root in instance_roots(self.watch):
            try:
                infos = program_infos(root)
            except SupervisorUnavailable as error:
                found[root] = error
                continue
            found[root] = infos
            for info in infos:
                samples.append((self.program_tag(root, info["name"]), self.program(root, info)))
        self.infos = found  # replaced whole: the promise loop reads it from another thread
        return samples

    def system(self) -> dict:
        now = time.monotonic()
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(self.disk_path)
        io = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        counters = _Counters(
            now,
            io.read_bytes if io else 0,
            io.write_bytes if io else 0,
            net.bytes_recv,
            net.bytes_sent,
        )
        previous, self._counters = self._counters, counters
        seconds = now - previous.at if previous else 0.0
        load1, load5, load15 = os.getloadavg()
        record = {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "cpu_count": psutil.cpu_count(),
            "load1": round(load1, 2),
            "load5": round(load5, 2),
            "load15": round(load15, 2),
            "memory_percent": memory.percent,
            "memory_used_mib": round(memory.used / MIB, 1),
            "memory_available_mib": round(memory.available / MIB, 1),
            "swap_percent": psutil.swap_memory().percent,
            "disk_percent": disk.percent,
            "disk_free_mib": round(disk.free / MIB, 1),
        }
        if previous is not None:
            record.update(
                disk_read_bytes_per_s=_rate(counters.disk_read, previous.disk_read, seconds),
                disk_write_bytes_per_s=_rate(counters.disk_write, previous.disk_write, seconds),
                net_recv_bytes_per_s=_rate(counters.net_recv, previous.net_recv, seconds),
                net_sent_bytes_per_s=_rate(counters.net_sent, previous.net_sent, seconds),
            )
        return record

    def program(self, root: Path, info: dict) -> dict:
        """One supervisor program: its process and its children (fluentd's worker)."""
        state = self._programs.setdefault((root, info["name"]), _Program())
        start = int(info.get("start") or 0)
        if state.start and start and start != state.start:
            state.restarts += 1  # supervisor started it again since the last sample
        state.start = start or state.start
        record = {
            "state": info.get("statename", "UNKNOWN"),
            "running": info.get("statename") == "RUNNING",
            "pid": int(info.get("pid") or 0),
            "restarts": state.restarts,
            "cpu_percent": 0.0,
            "rss_mib": 0.0,
            "open_files": 0,
            "fds": 0,
            "threads": 0,
        }
        pid = record["pid"]
        if not pid:
            state.processes.clear()
            return record
        try:
            top = state.processes.get(pid) or psutil.Process(pid)
            tree = [top, *top.children(recursive=True)]
        except psutil.Error:
            return record
        # Keep the same Process objects: cpu_percent measures since the previous call on one.
        state.processes = {p.pid: state.processes.get(p.pid, p) for p in tree}
        rss = 0
        for process in state.processes.values():
            try:
                with process.oneshot():
                    record["cpu_percent"] += process.cpu_percent(interval=None)
                    rss += process.memory_info().rss
                    record["fds"] += process.num_fds()
                    record["threads"] += process.num_threads()
                    record["open_files"] += len(process.open_files())
            except psutil.Error:
                continue  # exited between the listing and the read
        record["cpu_percent"] = round(record["cpu_percent"], 2)
        record["rss_mib"] = round(rss / MIB, 2)
        return record
