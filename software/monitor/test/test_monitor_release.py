"""software/monitor with the real fluentd: built through the cache (fluentd's source from the
seeded cache, verified by its tree hash), its instance runs fluentd, Wendelin, the monitor
and the cache server; a second real fluentd plays a remote agent."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from kiln.common.addresses import free_ports
from kiln.monitor.agent import supervisor_proxy
from kiln.monitor.parameters import tag_part
from kiln.software.build import BuildResult
from kiln.software.instance import InstanceError, instantiate
from kiln.testing.chromium import browse, keep, png_size
from kiln.testing.fluentd import Fluentd, tail_source
from kiln.testing.forward_client import ForwardClient, HandshakeFailed
from kiln.testing.releases import (
    CacheFixture,
    assert_software_links_sanely,
    build_snapshot_release,
    healthy_instance,
)
from kiln.wendelin import client as wendelin_client

pytestmark = pytest.mark.slow

HOST = tag_part(socket.gethostname())


@pytest.fixture(scope="module")
def monitor_build(
    wendelin_cold_build: BuildResult,
    release_cache: CacheFixture,
    source_snapshot: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> BuildResult:
    return build_snapshot_release(
        source_snapshot,
        "monitor",
        tmp_path_factory.mktemp("monitor"),
        release_cache.config(upload=True),
    )


@dataclass
class Appliance:
    root: Path
    fluentd: Path  # the built bin/fluentd
    ports: dict[str, int]
    policy: dict[str, str]
    page: dict[str, str]
    watched: Path

    @property
    def wendelin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['wendelin-http-port']}"

    def wendelin(self) -> wendelin_client.Context:
        return wendelin_client.connect(
            self.wendelin_url, self.policy["user"], self.policy["password"]
        )

    def entries(self, stream: str) -> list[dict]:
        with self.wendelin() as context:
            if stream not in context.streams:
                return []
            return [as_text(record) for _, record in context.streams[stream].entries()]

    def status(self) -> dict:
        answer = requests.get(
            self.page["url"] + "/status.json",
            auth=(self.page["user"], self.page["password"]),
            timeout=10,
        )
        answer.raise_for_status()
        return answer.json()

    def remote_snippet(self) -> str:
        return (self.root / "etc" / "remote-fluentd.conf").read_text()


@pytest.fixture(scope="module")
def appliance(
    monitor_build: BuildResult, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Appliance]:
    base = tmp_path_factory.mktemp("appliance")
    watched = base / "instances"
    root = watched / "monitor"
    names = ("forward-port", "wendelin-http-port", "wendelin-forward-port", "monitor-port")
    ports = dict(zip((*names, "cache-port"), free_ports(5), strict=True))
    parameters = {name: str(port) for name, port in ports.items()}
    parameters.update({"sample-interval": "2", "promise-interval": "3", "watch": f"{watched}/*"})
    with healthy_instance(monitor_build.software_dir, root, parameters):
        yield Appliance(
            root,
            monitor_build.software_dir / "parts" / "fluentd" / "bin" / "fluentd",
            ports,
            json.loads((root / "etc" / "wendelin-default-policy.json").read_text()),
            json.loads((root / "etc" / "monitor-credentials.json").read_text()),
            watched,
        )


def as_text(value: object) -> object:
    """fluentd's in_tail reads lines as binary strings, which msgpack stores as bin: Wendelin
    keeps them byte for byte, and the client reads them back as bytes."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {as_text(k): as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_text(v) for v in value]
    return value


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s: {what}")


def remote_agent_config(snippet: str, directory: Path, tail: Path, tag: str) -> str:
    """A remote fluentd: tails ``tail`` and sends with the appliance's snippet, as printed."""
    directory.mkdir(parents=True, exist_ok=True)
    match = snippet.replace("<match **>", f"<match {tag}>").replace(
        "/var/lib/fluentd/buffer/kiln-appliance", str(directory / "buffer")
    )
    return tail_source(tail, directory / "tail.pos", tag) + match + "\n"


def write_lines(path: Path, start: int, count: int, pause: float = 0.0) -> None:
    with path.open("a") as stream:
        for number in range(start, start + count):
            stream.write(json.dumps({"n": number, "text": f"line {number}"}) + "\n")
            if pause:
                stream.flush()
                time.sleep(pause)


def numbers(records: list[dict]) -> list[int]:
    return sorted(int(record["n"]) for record in records)


# -- build -----------------------------------------------------------------------------------


def test_fluentd_is_built_from_the_seeded_source_and_shared_parts_come_from_the_cache(
    monitor_build: BuildResult,
) -> None:
    outcomes = {name: part["outcome"] for name, part in monitor_build.parts.items()}
    # python3, supervisor and kiln are the same parts as in software/wendelin.
    assert outcomes["supervisor"] == outcomes["kiln"] == "hit"
    assert outcomes["python3"] == "no-files"  # the machine's Python, checked: no file
    assert outcomes["fluentd-source"] == "uploaded"
    report = json.loads((monitor_build.software_dir / ".kiln-binary-cache.json").read_text())
    assert any("v1.16.11.tar.gz: from cache" in event for event in report["sources"])
    fluentd = monitor_build.software_dir / "parts" / "fluentd" / "bin" / "fluentd"
    version = subprocess.run([fluentd, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "fluentd 1.16.11"
    assert assert_software_links_sanely(monitor_build.software_dir) > 0


# -- instance --------------------------------------------------------------------------------


def test_instance_secrets_are_generated_and_private(appliance: Appliance) -> None:
    etc = appliance.root / "etc"
    for name in (
        "fluentd.conf",
        "fluentd-shared-key",
        "remote-fluentd.conf",
        "monitor-credentials.json",
        "wendelin-default-policy.json",
        "cache-uploader.txt",
    ):
        assert (etc / name).stat().st_mode & 0o077 == 0, name
    shared_key = (etc / "fluentd-shared-key").read_text().strip()
    assert len(shared_key) >= 40
    assert shared_key in (etc / "fluentd.conf").read_text()
    snippet = appliance.remote_snippet()
    assert f"port {appliance.ports['forward-port']}" in snippet and shared_key in snippet
    # Secrets are never in a process's arguments.
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert shared_key.encode() not in arguments
        assert appliance.page["password"].encode() not in arguments
    # The page needs the generated account.
    assert requests.get(appliance.page["url"] + "/", timeout=10).status_code == 401
    # The cache server kept its generated upload user.
    line = next(x for x in (etc / "cache-uploader.txt").read_text().splitlines() if "password" in x)
    url = f"http://127.0.0.1:{appliance.ports['cache-port']}/shacache"
    assert requests.post(url, data=b"x", timeout=10).status_code == 401
    assert requests.post(url, data=b"x", auth=("uploader", line.split()[-1]), timeout=10).ok


def test_up_prints_the_remote_configuration(monitor_build: BuildResult, appliance: Appliance):
    """`kiln instance up` again: idempotent, and it prints the snippet with host, port, key."""
    params = [f"--param={k}={v}" for k, v in appliance.ports.items()]
    params += ["--param=sample-interval=2", "--param=promise-interval=3"]
    params += [f"--param=watch={appliance.watched}/*"]
    command = [sys.executable, "-m", "kiln", "instance", "up", "software/monitor"]
    command += ["--root", str(appliance.root), "--software-dir", str(monitor_build.software_dir)]
    printed = subprocess.run(command + params, capture_output=True, text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr
    assert appliance.remote_snippet().strip() in printed.stdout
    assert "require_ack_response true" in printed.stdout


def test_remote_fluentd_lines_arrive_exactly_once(appliance: Appliance, tmp_path: Path) -> None:
    tail = tmp_path / "app.log"
    write_lines(tail, 0, 3000)
    config = remote_agent_config(appliance.remote_snippet(), tmp_path / "agent", tail, "agent.a")
    with Fluentd(appliance.fluentd, tmp_path / "agent", config).wait_running():
        write_lines(tail, 3000, 2000)
        wait_for(lambda: len(appliance.entries("agent.a")) >= 5000, 120, "5000 lines in Wendelin")
        time.sleep(3)  # anything more would be a duplicate
    assert numbers(appliance.entries("agent.a")) == list(range(5000))


def wendelin_pid(appliance: Appliance) -> int:
    return supervisor_proxy(appliance.root).supervisor.getProcessInfo("wendelin")["pid"]


def wendelin_healthy(appliance: Appliance) -> bool:
    try:
        return requests.get(appliance.wendelin_url + "/healthz", timeout=5).ok
    except requests.ConnectionError:
        return False


def test_wendelin_killed_while_data_flows_loses_and_duplicates_nothing(
    appliance: Appliance, tmp_path: Path
) -> None:
    tail = tmp_path / "app.log"
    tail.touch()  # in_tail looks for new files only every 60 s (refresh_interval)
    config = remote_agent_config(appliance.remote_snippet(), tmp_path / "agent", tail, "agent.k")
    with Fluentd(appliance.fluentd, tmp_path / "agent", config).wait_running():
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import json, sys, time\n"
                "with open(sys.argv[1], 'a') as s:\n"
                "    for n in range(4000):\n"
                "        s.write(json.dumps({'n': n}) + '\\n'); s.flush()\n"
                "        if n % 100 == 0: time.sleep(0.1)\n",
                str(tail),
            ]
        )
        for _ in range(2):
            wait_for(lambda: appliance.entries("agent.k"), 60, "the first lines in Wendelin")
            before = wendelin_pid(appliance)
            os.kill(before, signal.SIGKILL)
            # supervisor starts it again; the appliance's fluentd retries meanwhile.
            wait_for(lambda b=before: wendelin_pid(appliance) not in (0, b), 60, "restart")
            wait_for(lambda: wendelin_healthy(appliance), 60, "Wendelin answers again")
            time.sleep(1)
        assert writer.wait(120) == 0
        wait_for(lambda: len(appliance.entries("agent.k")) >= 4000, 180, "4000 lines")
        time.sleep(3)
    assert numbers(appliance.entries("agent.k")) == list(range(4000))


def test_tutorial_shape_with_out_http_to_the_policy_url(appliance: Appliance, tmp_path: Path):
    """The tutorial's shape: <source> tails files, <match> goes to the Wendelin policy URL
    with user and password; fluentd's own out_http stands in for fluent-plugin-wendelin."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("a", "b"):
        write_lines(logs / f"sensor-{name}.log", 0, 500)
    # Wendelin's own URL layout: streamtool_uri + /ingest?reference=<tag>.
    policy_url = "#{ENV['WENDELIN_URL']}/erp5/portal_ingestion_policies/#{ENV['WENDELIN_POLICY']}"
    endpoint = policy_url + "/ingest?reference=${tag}"
    config = f"""
<source>
  @type tail
  path {logs}/*.log
  pos_file {tmp_path}/tail.pos
  tag sensor.tutorial
  read_from_head true
  <parse>
    @type json
  </parse>
</source>
<match sensor.**>
  @type http
  endpoint "{endpoint}"
  retryable_response_codes [503]
  <auth>
    method basic
    username "#{{ENV['WENDELIN_USER']}}"
    password "#{{ENV['WENDELIN_PASSWORD']}}"
  </auth>
  <format>
    @type msgpack
  </format>
  <buffer tag>
    flush_interval 1s
  </buffer>
</match>
"""
    env = {
        "WENDELIN_URL": appliance.wendelin_url,
        "WENDELIN_POLICY": appliance.policy["policy"],
        "WENDELIN_USER": appliance.policy["user"],
        "WENDELIN_PASSWORD": appliance.policy["password"],
    }
    with Fluentd(appliance.fluentd, tmp_path / "agent", config, env).wait_running() as agent:
        wait_for(lambda: len(appliance.entries("sensor.tutorial")) >= 1000, 120, "1000 lines")
        time.sleep(3)
        assert "[warn]" not in agent.log()
    assert numbers(appliance.entries("sensor.tutorial")) == sorted(list(range(500)) * 2)


def test_wrong_shared_key_is_refused_logged_and_nothing_is_stored(
    appliance: Appliance, tmp_path: Path
) -> None:
    tail = tmp_path / "app.log"
    write_lines(tail, 0, 10)
    snippet = re.sub(r"shared_key '[^']*'", "shared_key 'not-the-key'", appliance.remote_snippet())
    config = remote_agent_config(snippet, tmp_path / "agent", tail, "agent.wrongkey")
    appliance_log = appliance.root / "var" / "log" / "fluentd.log"
    with Fluentd(appliance.fluentd, tmp_path / "agent", config).wait_running() as agent:
        agent.wait_log(r"shared_key mismatch", 60)
        wait_for(
            lambda: "Shared key mismatch" in appliance_log.read_text(errors="replace"),
            60,
            "the appliance's fluentd logs the refusal",
        )
    with pytest.raises(HandshakeFailed):
        ForwardClient("127.0.0.1", appliance.ports["forward-port"], shared_key="not-the-key")
    time.sleep(2)
    with appliance.wendelin() as context:
        assert "agent.wrongkey" not in context.streams


# -- monitor ---------------------------------------------------------------------------------


def test_samples_land_in_their_streams_with_sane_values(appliance: Appliance) -> None:
    system = wait_for(
        lambda: len(s := appliance.entries(f"monitor.{HOST}.system")) >= 2 and s,
        60,
        "two system samples in Wendelin",
    )
    cores = os.cpu_count() or 1
    for record in system:
        assert 0 <= record["cpu_percent"] <= 100
        assert 0 < record["memory_percent"] < 100 and record["memory_available_mib"] > 0
        assert record["load1"] >= 0 and 0 < record["disk_percent"] < 100
        assert record["cpu_count"] == cores
    assert "net_recv_bytes_per_s" in system[-1]
    programs = {}
    for program in ("fluentd", "wendelin", "monitor", "shacache"):
        stream = f"monitor.{HOST}.monitor.{program}"
        programs[program] = wait_for(lambda s=stream: appliance.entries(s), 60, stream)[-1]
    for record in programs.values():
        assert record["running"] and record["state"] == "RUNNING" and record["pid"] > 0
        assert 5 < record["rss_mib"] < 4096 and 0 <= record["cpu_percent"] <= 100 * cores
        assert record["fds"] > 0 and record["threads"] >= 1
    assert programs["wendelin"]["open_files"] > 0  # its streams and catalog
    assert programs["fluentd"]["rss_mib"] > 20  # Ruby: a supervisor and a worker


def test_a_failing_promise_shows_on_the_page_in_json_and_in_the_feed(
    appliance: Appliance, tmp_path: Path
) -> None:
    (closed_port,) = free_ports(1)
    broken = appliance.watched / "broken" / "etc"
    broken.mkdir(parents=True)
    (broken / "kiln-instance.json").write_text(
        json.dumps(
            {
                "release": "broken",
                "supervisord-conf": str(broken / "supervisord.conf"),
                "checks": [{"name": "api port", "tcp": f"127.0.0.1:{closed_port}"}],
            }
        )
    )

    def failing() -> list[dict]:
        promises = appliance.status()["promises"]
        return [p for p in promises if p["instance"] == "broken" and not p["ok"]]

    found = {p["promise"]: p for p in wait_for(failing, 60, "the broken instance's promises")}
    assert "api port" in found and "supervisord" in found
    assert "refused" in found["api port"]["message"].lower()
    assert found["api port"]["history"] and not found["api port"]["history"][0]["ok"]
    auth = (appliance.page["user"], appliance.page["password"])
    page = requests.get(appliance.page["url"] + "/", auth=auth, timeout=30).text
    assert "FAIL" in page and "broken" in page and "api port" in page
    feed = requests.get(appliance.page["url"] + "/feed.atom", auth=auth, timeout=10)
    assert feed.headers["Content-Type"].startswith("application/atom+xml")
    assert "FAIL broken: api port" in feed.text
    status = subprocess.run(
        [sys.executable, "-m", "kiln", "monitor", "status", "--instance", str(appliance.root)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status.returncode == 1
    assert "[FAIL] broken: api port" in status.stdout
    assert f"monitor.{HOST}.system" in status.stdout

    # Fixed: the promise passes again, and the feed has the change.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", closed_port))
        listener.listen()

        def passing() -> bool:
            promises = appliance.status()["promises"]
            return any(p["promise"] == "api port" and p["ok"] for p in promises)

        wait_for(passing, 60, "the api port promise passes")
    feed = requests.get(appliance.page["url"] + "/feed.atom", auth=auth, timeout=10).text
    assert feed.index("PASS broken: api port") < feed.index("FAIL broken: api port")
    stream = wait_for(lambda: appliance.entries(f"promise.{HOST}.broken"), 60, "promise stream")
    assert {"promise", "ok", "message", "duration"} <= set(stream[0])


def test_page_in_chromium_shows_promises_and_resource_plots(
    appliance: Appliance, tmp_path: Path
) -> None:
    wait_for(lambda: len(appliance.entries(f"monitor.{HOST}.system")) >= 3, 60, "three samples")
    user, password = appliance.page["user"], appliance.page["password"]
    url = appliance.page["url"].replace("http://", f"http://{user}:{password}@") + "/"
    dom = browse(url, "--dump-dom").stdout
    assert "Promises" in dom and "PASS" in dom
    assert f"monitor.{HOST}.system" in dom and "<polyline" in dom  # a plot
    assert dom.count("<svg") >= 2  # the system and at least one program
    shot = str(tmp_path / "monitor-page.png")
    browse(url, f"--screenshot={shot}")
    assert png_size(shot) == (1280, 900)
    assert os.path.getsize(shot) > 20_000
    keep(shot)


def test_a_malformed_parameter_is_an_error_at_instance_up_that_names_it(
    monitor_build: BuildResult, tmp_path: Path
) -> None:
    for parameters, named in (
        ({"flush-interval": "soon"}, "flush-interval='soon'"),
        ({"forward-port": "99999"}, "forward-port='99999'"),
        ({"flush-intervall": "1"}, "unknown parameter(s): flush-intervall"),
        ({"tls-cert": str(tmp_path / "missing.pem")}, "tls-cert="),
    ):
        with pytest.raises(InstanceError, match=re.escape(named)):
            instantiate(monitor_build.software_dir, tmp_path / "bad", parameters)
        assert not (tmp_path / "bad" / "var" / "run" / "supervisord.pid").exists()


def test_program_restarts_are_counted(appliance: Appliance) -> None:
    proxy = supervisor_proxy(appliance.root)
    try:
        proxy.supervisor.stopProcess("shacache", True)
        proxy.supervisor.startProcess("shacache", True)
    except xmlrpc.client.Fault as fault:  # pragma: no cover - names the supervisor error
        pytest.fail(str(fault))
    stream = f"monitor.{HOST}.monitor.shacache"
    wait_for(lambda: appliance.entries(stream)[-1]["restarts"] >= 1, 60, "a restart counted")
