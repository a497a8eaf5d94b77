"""`kiln monitor serve`: the sampling loop, the promise loop and the page, in one process.

Samples and promise results go to the instance's fluentd over its unix socket (the forward
protocol, through fluent-logger); fluentd buffers them to disk and forwards them to Wendelin
with acknowledgements.  Resource samples are cheap and frequent: if fluentd is down for a
moment, fluent-logger keeps up to 1 MiB of them in memory and sends them with the next ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from aiohttp import web
from fluent.sender import FluentSender

from kiln.monitor.agent import Agent
from kiln.monitor.configure import Settings
from kiln.monitor.parameters import tag_part
from kiln.monitor.promises import PromiseStore, Result, run_promises

log = logging.getLogger("kiln.monitor")


class Emitter:
    """Events to fluentd's in_unix socket, with EventTime (nanosecond) timestamps."""

    def __init__(self, socket_path: str) -> None:
        self.sender = FluentSender(
            "", host=f"unix://{socket_path}", port=0, nanosecond_precision=True, timeout=3.0
        )
        self.failures = 0

    def emit(self, tag: str, record: dict, when: float | None = None) -> bool:
        # FluentSender joins its (empty) prefix and the label with a dot: give the tag whole.
        self.sender.tag = tag
        ok = self.sender.emit_with_time(None, when or time.time(), record)
        if not ok:
            self.failures += 1
            error = self.sender.last_error
            self.sender.clear_last_error()
            log.warning("fluentd did not take %s (kept in memory for the next try): %s", tag, error)
        return ok

    def close(self) -> None:
        self.sender.close()


@dataclass
class MonitorState:
    """What the page, the JSON endpoint and the feed show."""

    settings: Settings
    store: PromiseStore
    latest: dict[str, tuple[float, dict]] = field(default_factory=dict)  # tag -> (time, record)
    promises: list[Result] = field(default_factory=list)  # the last run's results
    last_sample: float | None = None
    last_promise_run: float | None = None
    agent_cpu_percent: float = 0.0
    samples: int = 0


async def sample_forever(state: MonitorState, agent: Agent, emitter: Emitter) -> None:
    me = psutil.Process()
    me.cpu_percent(interval=None)
    while True:
        started = time.monotonic()
        try:
            samples = await asyncio.to_thread(agent.sample)
            now = time.time()
            for tag, record in samples:
                state.latest[tag] = (now, record)
            await asyncio.to_thread(_emit_all, emitter, samples, now)
            state.last_sample = now
            state.samples += 1
            state.agent_cpu_percent = me.cpu_percent(interval=None)
        except Exception:  # a failed round must not stop the next ones
            log.exception("sampling failed")
        elapsed = time.monotonic() - started
        await asyncio.sleep(max(state.settings.sample_interval - elapsed, 0.1))


def _emit_all(emitter: Emitter, samples: list[tuple[str, dict]], when: float) -> None:
    for tag, record in samples:
        emitter.emit(tag, record, when)


async def promises_forever(state: MonitorState, agent: Agent, emitter: Emitter) -> None:
    settings = state.settings
    while True:
        started = time.monotonic()
        try:
            while not state.samples:  # the first sample lists the instances' programs
                await asyncio.sleep(0.2)
            results = await asyncio.to_thread(run_promises, dict(agent.infos))
            for result in results:
                if state.store.record(result):
                    level = logging.INFO if result.ok else logging.WARNING
                    outcome = "pass" if result.ok else "FAIL"
                    log.log(
                        level,
                        "promise %s/%s: %s: %s",
                        result.instance,
                        result.promise,
                        outcome,
                        result.message,
                    )
            state.promises = results
            state.last_promise_run = time.time()
            tag = f"promise.{settings.hostname}"
            await asyncio.to_thread(
                _emit_all,
                emitter,
                [(f"{tag}.{tag_part(r.instance)}", _promise_record(r)) for r in results],
                time.time(),
            )
        except Exception:
            log.exception("promise run failed")
        elapsed = time.monotonic() - started
        await asyncio.sleep(max(settings.promise_interval - elapsed, 0.1))


def _promise_record(result: Result) -> dict:
    return {
        "promise": result.promise,
        "ok": result.ok,
        "message": result.message,
        "duration": result.duration,
    }


async def serve(instance_root: Path) -> None:
    from kiln.monitor.web import make_app

    settings = Settings.read(instance_root)
    credentials = json.loads(Path(settings.credentials_file).read_text())
    policy = json.loads(Path(settings.wendelin_policy_file).read_text())
    store = PromiseStore(Path(settings.database))
    state = MonitorState(settings, store)
    agent = Agent(settings.hostname, settings.watch, disk_path=settings.instance)
    emitter = Emitter(settings.fluentd_socket)
    app = make_app(state, credentials, (policy["user"], policy["password"]))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.listen_host, settings.port).start()
    log.info(
        "monitor of %s on http://%s:%d: sampling every %g s, promises every %g s, watching %s",
        settings.hostname,
        settings.listen_host,
        settings.port,
        settings.sample_interval,
        settings.promise_interval,
        " ".join(settings.watch),
    )
    tasks = [
        asyncio.create_task(sample_forever(state, agent, emitter)),
        asyncio.create_task(promises_forever(state, agent, emitter)),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await runner.cleanup()
    emitter.close()
    store.close()
    log.info("stopped")
