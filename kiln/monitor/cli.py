"""`kiln monitor`: configure and run the monitor instance's service, and read its status."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import requests

from kiln.common.cli import fail

INSTANCE_OPTION = click.option(
    "--instance",
    "instance",
    type=click.Path(file_okay=False, path_type=Path),
    help="The monitor instance's directory (default: ~/.kiln/instance/monitor).",
)


def _instance(instance: Path | None) -> Path:
    from kiln.software.instance import default_root

    return (instance or default_root("monitor")).resolve()


@click.group()
def monitor() -> None:
    """The appliance's monitor: samples of the machine and of every supervisor program of
    every instance (CPU, memory, disk, network, load; CPU, RSS, open files, restarts), sent
    through fluentd into Wendelin streams monitor.<host>.system and
    monitor.<host>.<instance>.<program>; promises (each instance's health checks, on a
    schedule, with history); a page, a JSON status and an Atom feed of changes.

    \b
    Run it as a release:
      kiln software build software/monitor && kiln instance up software/monitor
      kiln monitor status
    """


@monitor.command("configure")
@INSTANCE_OPTION
@click.option(
    "--fluentd",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="fluentd program: check the written configuration with `fluentd --dry-run`.",
)
def configure_command(instance: Path | None, fluentd: Path | None) -> None:
    """Check the instance's parameters and write fluentd's and the monitor's configuration.

    The monitor instance runs this at every `kiln instance up`; a bad parameter stops it
    with a message that names the parameter.  Secrets are generated once (mode 0600).
    """
    from kiln.monitor.configure import ConfigureError, configure

    try:
        configure(_instance(instance), fluentd)
    except ConfigureError as error:
        fail(str(error))


@monitor.command("serve")
@INSTANCE_OPTION
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def serve_command(instance: Path | None, verbose: bool) -> None:
    """Sample, run promises, and serve the page (what the instance's supervisor runs)."""
    import asyncio
    import logging

    from kiln.monitor.configure import ConfigureError
    from kiln.monitor.service import serve

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    try:
        asyncio.run(serve(_instance(instance)))
    except (ConfigureError, OSError) as error:
        fail(str(error))


@monitor.command("status")
@INSTANCE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document as is.")
@click.option("--history", is_flag=True, help="Also print each promise's recent results.")
def status_command(instance: Path | None, as_json: bool, history: bool) -> None:
    """Print the promises' states and the latest resource samples, as the page shows them.

    Reads the page's address and account from the instance (etc/monitor-credentials.json).
    Exits 1 when a promise fails.
    """
    from kiln.monitor.configure import CREDENTIALS_FILE

    root = _instance(instance)
    path = root / CREDENTIALS_FILE
    if not path.is_file():
        fail(f"{path} not found: is the monitor instance up? (kiln instance up software/monitor)")
    credentials = json.loads(path.read_text())
    try:
        response = requests.get(
            credentials["url"] + "/status.json",
            auth=(credentials["user"], credentials["password"]),
            timeout=10,
        )
        response.raise_for_status()
    except requests.RequestException as error:
        fail(f"the monitor at {credentials['url']} does not answer: {error}")
    document = response.json()
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        print_status(document, history)
    if document["promises_failing"]:
        sys.exit(1)


def print_status(document: dict, history: bool = False) -> None:
    promises = document["promises"]
    click.echo(
        f"{document['host']}: {len(promises)} promises, {document['promises_failing']} failing "
        f"(last run {document['agent']['last_promise_run'] or 'not yet'})"
    )
    for promise in sorted(promises, key=lambda p: (p["ok"], p["instance"], p["promise"])):
        state = "PASS" if promise["ok"] else "FAIL"
        click.echo(
            f"  [{state}] {promise['instance']}: {promise['promise']}: {promise['message']} "
            f"(since {promise['since']}, {promise['duration'] * 1000:.0f} ms)"
        )
        if history:
            marks = "".join("." if h["ok"] else "X" for h in reversed(promise["history"]))
            click.echo(f"         history, oldest first: {marks}")
    click.echo(f"resources (last sample {document['agent']['last_sample'] or 'not yet'}):")
    for tag, record in sorted(document["resources"].items()):
        if tag.endswith(".system"):
            fields = ("cpu_percent", "memory_percent", "load1", "disk_percent")
        else:
            fields = ("state", "cpu_percent", "rss_mib", "open_files", "restarts")
        values = "  ".join(f"{f}={record[f]}" for f in fields if f in record)
        click.echo(f"  {tag}: {values}")
    click.echo(f"monitor agent: {document['agent']['cpu_percent']:.2f}% of a core")
