"""End-to-end collection rate: a real fluentd tailing a file, through the appliance's fluentd,
into Wendelin with acknowledgements, beside the same fluentd writing the lines to a local file
(out_file) in the same run; and the monitor agent's own CPU.

    python bench/bench_collect.py [--lines 1000000] [--rounds 3] [--instance DIR]

Both paths read the same file with in_tail (read_from_head) and use the same file buffer
settings (flush every second); the rate counts from the moment fluentd is started (Ruby's
start-up, about 2 s, is in both) to the moment the last line is in Wendelin (committed,
fsynced) or in the out_file file.  Rounds alternate the two paths.  The appliance's fluentd
runs the configuration the monitor instance writes (kiln.monitor.fluentd_config).  The
agent's CPU is measured on a running monitor instance (--instance, default
~/.kiln/instance/monitor), if there is one.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from kiln.monitor.fluentd_config import Paths, appliance_config, remote_agent_snippet
from kiln.monitor.parameters import parse
from kiln.testing.fluentd import Fluentd, tail_source, unpacked_fluentd
from kiln.testing.wendelin import ServerProcess, add_policy, free_port

TARGET_RATIO = 0.70
TARGET_AGENT_CPU = 2.0  # percent of one core, at a 10 s sampling interval

# out_file's default buffer is keyed by day and flushes lazily: flush like the remote
# snippet's buffer does (every second), so both paths pay the same buffering.
BUFFER = """  <buffer>
    @type file
    path {path}
    flush_mode interval
    flush_interval 1s
  </buffer>"""


def wait_until(done: Callable[[], bool], timeout: float = 600.0) -> float:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the lines did not all arrive")
        time.sleep(0.05)
    return time.monotonic()


class Wendelin:
    def __init__(self, url: str, auth: tuple[str, str]) -> None:
        self.url, self.session = url, requests.Session()
        self.session.auth = auth

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return self.session.get(self.url + path, **kwargs)


def run_out_file(program: Path, work: Path, lines: Path, count: int) -> float:
    config = tail_source(lines, work / "pos", "bench.file") + (
        "<match bench.**>\n  @type file\n"
        f"  path {work / 'out'}\n  append true\n  <format>\n    @type json\n  </format>\n"
        + BUFFER.format(path=work / "buffer")
        + "\n</match>\n"
    )
    seen = {"lines": 0, "offset": 0}

    def arrived() -> bool:
        for path in work.glob("out*.log"):
            with path.open("rb") as stream:
                stream.seek(seen["offset"])
                data = stream.read()
            seen["offset"] += len(data)
            seen["lines"] += data.count(b"\n")
        return seen["lines"] >= count

    started = time.monotonic()
    with Fluentd(program, work, config):
        return count / (wait_until(arrived) - started)


def run_forward(
    program: Path, work: Path, lines: Path, count: int, snippet: str, wendelin: Wendelin, tag: str
) -> float:
    match = snippet.replace("<match **>", f"<match {tag}>").replace(
        "/var/lib/fluentd/buffer/kiln-appliance", str(work / "buffer")
    )
    config = tail_source(lines, work / "pos", tag) + match

    def arrived() -> bool:
        answer = wendelin.get(f"/api/streams/{tag}", timeout=10)
        return answer.status_code == 200 and answer.json()["entries"] >= count

    started = time.monotonic()
    with Fluentd(program, work, config):
        return count / (wait_until(arrived) - started)


def agent_cpu(instance: Path, seconds: float) -> tuple[float, float] | None:
    """(CPU % of one core of the monitor program over ``seconds``, sampling interval)."""
    import psutil

    from kiln.monitor.agent import supervisor_proxy

    settings = instance / "etc" / "monitor.json"
    if not settings.is_file():
        return None
    interval = json.loads(settings.read_text())["sample_interval"]
    pid = supervisor_proxy(instance).supervisor.getProcessInfo("monitor")["pid"]
    process = psutil.Process(pid)
    before = sum(process.cpu_times()[:2])
    time.sleep(seconds)
    return 100 * (sum(process.cpu_times()[:2]) - before) / seconds, interval


def main() -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--lines", type=int, default=1_000_000)
    options.add_argument("--rounds", type=int, default=3)
    options.add_argument("--instance", type=Path, default=Path.home() / ".kiln/instance/monitor")
    options.add_argument("--cpu-seconds", type=float, default=120.0)
    arguments = options.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-collect-") as tmp:
        base = Path(tmp)
        program = unpacked_fluentd(base)
        lines = base / "lines.log"
        with lines.open("w") as stream:
            for number in range(arguments.lines):
                record = {"n": number, "host": "sensor-17", "value": number * 0.5, "unit": "kW"}
                stream.write(json.dumps(record) + "\n")
        wendelin_root = str(base / "wendelin")
        policy = add_policy(wendelin_root, "default")
        with ServerProcess(wendelin_root, log_path=str(base / "wendelin.log")) as server:
            shared_key = secrets.token_urlsafe(32)
            defaults = {
                "host": "127.0.0.1",
                "forward-bind": "127.0.0.1",
                "forward-port": str(free_port()),
                "advertise-host": "",
                "tls-cert": "",
                "tls-key": "",
                "wendelin-http-port": str(server.http_port),
                "wendelin-forward-port": str(server.forward_port),
                "monitor-port": "1",
                "cache-port": "1",
                "sample-interval": "10",
                "promise-interval": "60",
                "flush-interval": "1",
                "hostname": "bench",
                "watch": "",
            }
            parameters = parse(defaults)
            appliance_dir = base / "appliance"
            paths = Paths(appliance_dir)
            for directory in (paths.socket_dir, paths.pos_dir, paths.buffer.parent):
                directory.mkdir(parents=True, exist_ok=True)
            config = appliance_config(parameters, paths, shared_key, policy["shared_key"], "bench")
            snippet = remote_agent_snippet(parameters, shared_key)
            wendelin = Wendelin(server.url, (policy["user"], policy["password"]))
            with Fluentd(program, appliance_dir, config) as appliance:
                appliance.wait_running()
                file_rates, forward_rates = [], []
                for number in range(arguments.rounds):
                    file_rates.append(
                        run_out_file(program, base / f"file-{number}", lines, arguments.lines)
                    )
                    forward_rates.append(
                        run_forward(
                            program,
                            base / f"forward-{number}",
                            lines,
                            arguments.lines,
                            snippet,
                            wendelin,
                            f"bench.r{number}",
                        )
                    )
                    print(
                        f"round {number + 1}: out_file {file_rates[-1]:,.0f} events/s, "
                        f"forward -> Wendelin {forward_rates[-1]:,.0f} events/s",
                        file=sys.stderr,
                    )
    file_rate = statistics.median(file_rates)
    forward_rate = statistics.median(forward_rates)
    ratio = forward_rate / file_rate
    print(f"\n{arguments.lines:,} lines of ~75 B, median of {arguments.rounds} rounds\n")
    print("| path | events/s | out_file baseline | ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| fluentd in_tail -> out_forward (ack, shared key) -> appliance fluentd -> "
        f"Wendelin (ack, fsync) | {forward_rate:,.0f} | {file_rate:,.0f} | {ratio:.0%} | "
        f"{'met' if ratio >= TARGET_RATIO else 'NOT met'} (>= {TARGET_RATIO:.0%}) |"
    )
    measured = agent_cpu(arguments.instance, arguments.cpu_seconds)
    if measured is None:
        print(f"\nagent CPU: no monitor instance at {arguments.instance} (--instance DIR)")
    else:
        cpu, interval = measured
        verdict = "met" if cpu < TARGET_AGENT_CPU or interval != 10 else "NOT met"
        print(
            f"| monitor agent (kiln monitor serve), sampling every {interval:g} s, "
            f"{arguments.cpu_seconds:g} s | {cpu:.2f}% of a core | | | {verdict} "
            f"(< {TARGET_AGENT_CPU:g}%) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
