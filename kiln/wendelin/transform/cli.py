"""`kiln wendelin transform`, `kiln wendelin policy transform` and `kiln wendelin status`.

The CLI declares (``declarations``); the running service does the work in the background
and reports in ``<root>/transforms/status.json``, which ``status`` prints.
"""

import functools
import json
import math
import time
from collections.abc import Callable

import click

from kiln.wendelin.catalog_options import catalog_options, open_cli_catalog
from kiln.wendelin.options import ROOT_OPTION
from kiln.wendelin.transform import declarations
from kiln.wendelin.transform.model import (
    CAUGHT_UP,
    FAILED,
    SUFFIXES,
    Declaration,
    TransformError,
    read_status,
)

KIND_HELP = (
    "wav-pcm: a WAV stream's samples, frames x channels; wav-channel: one channel; "
    "wav-spectrum: one channel's |FFT| in windows (and the channel itself, as "
    "<output>.channel); records: numeric fields of entries as columns (time first)."
)


def parameter_options(function: Callable) -> Callable:
    """The kinds' parameters, as options; only those given are declared."""
    options = [
        click.option("--channel", type=click.IntRange(min=0), help="wav-*: channel, from 0 [0]."),
        click.option(
            "--window", type=click.IntRange(min=2), help="wav-spectrum: frames per FFT [1024]."
        ),
        click.option(
            "--hop",
            type=click.IntRange(min=1),
            help="wav-spectrum: frames between windows [window / 2].",
        ),
        click.option(
            "--taper", type=click.Choice(["hann", "none"]), help="wav-spectrum: window [hann]."
        ),
        click.option(
            "--fields",
            help="records: comma-separated fields to make columns of [the numeric fields of "
            "the first entries].",
        ),
    ]
    for option in reversed(options):
        function = option(function)

    @functools.wraps(function)
    def collect(**arguments: object) -> object:
        names = ("channel", "window", "hop", "taper", "fields")
        params = {name: arguments.pop(name) for name in names}
        given = {name: value for name, value in params.items() if value is not None}
        return function(params=given, **arguments)

    return collect


KIND_OPTION = click.option(
    "--kind", type=click.Choice(sorted(SUFFIXES)), required=True, help=KIND_HELP
)


@click.group()
def transform() -> None:
    """Transformations: stream ranges into data arrays, run by `kiln wendelin serve`."""


@transform.command("run")
@ROOT_OPTION
@click.argument("stream")
@KIND_OPTION
@click.option("--output", required=True, help="Name of the array to write.")
@parameter_options
@click.option(
    "--wait",
    type=float,
    default=0.0,
    help="Seconds to wait for the service to catch up with the stream (0: do not wait).",
)
def run(root: str, stream: str, kind: str, output: str, params: dict, wait: float) -> None:
    """Transform STREAM into array --output, now and as the stream grows.

    The running service picks the declaration up within a second and keeps the array up to
    date; the array's committed cursor makes it exactly once across restarts. Declaring the
    same --output again replaces its declaration (and retries it if it failed).
    """
    declaration = Declaration(stream, kind, output, params)
    try:
        declarations.check(declaration)
    except TransformError as problem:
        raise click.ClickException(str(problem)) from None
    with declarations.changing(root) as declared:
        declared.jobs = [job for job in declared.jobs if job.output != output]
        declared.jobs.append(declaration)
    click.echo(f"declared: {stream} -> {output} ({kind})")
    if wait > 0:
        _wait_for(root, output, wait)


def _wait_for(root: str, output: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for status in read_status(root)["transforms"]:
            if status["output"] != output:
                continue
            if status["state"] == FAILED:
                raise click.ClickException(f"{output} failed: {status['message']}")
            if status["state"] == CAUGHT_UP:
                click.echo(_line(status))
                return
        time.sleep(0.2)
    raise click.ClickException(f"{output} has not caught up after {seconds} s (is serve up?)")


@transform.command("remove")
@ROOT_OPTION
@click.argument("output")
def remove(root: str, output: str) -> None:
    """Stop transforming into OUTPUT (a job run by hand); the array stays."""
    with declarations.changing(root) as declared:
        kept = [job for job in declared.jobs if job.output != output]
        found = len(kept) != len(declared.jobs)
        declared.jobs = kept
    if not found:
        raise click.ClickException(f"no transformation run by hand writes {output!r}")


@transform.command("retry")
@ROOT_OPTION
@click.argument("output")
def retry(root: str, output: str) -> None:
    """Retry the failed transformation writing OUTPUT now, instead of after its backoff."""
    with declarations.changing(root) as declared:
        declared.retries[output] = declared.retries.get(output, 0) + 1


@transform.command("list")
@ROOT_OPTION
def list_declared(root: str) -> None:
    """The declarations: jobs run by hand, then policies' rules."""
    declared = declarations.load(root)
    for job in declared.jobs:
        click.echo(f"job\t{job.stream} -> {job.output}\t{job.kind}\t{json.dumps(job.params)}")
    for rule in declared.rules:
        click.echo(
            f"rule\tpolicy={rule.policy}\tstreams={rule.stream_pattern} -> "
            f"<stream>.{SUFFIXES[rule.kind]}\t{rule.kind}\t{json.dumps(rule.params)}"
        )


@click.group("transform")
def policy_transform() -> None:
    """Transformations every matching stream of a policy gets, into <stream>.<suffix>."""


@policy_transform.command("add")
@ROOT_OPTION
@catalog_options
@click.argument("policy")
@click.option(
    "--stream-pattern",
    default="**",
    show_default=True,
    help="fluentd <match> pattern of the policy's streams to transform.",
)
@KIND_OPTION
@parameter_options
def policy_add(root: str, policy: str, stream_pattern: str, kind: str, params: dict) -> None:
    """Transform every stream of POLICY matching --stream-pattern, existing or new.

    Outputs are named after the stream: <stream>.pcm, .channel, .spectrum (and
    .spectrum.channel) or .columns.
    """
    from kiln.wendelin.policies import tag_matcher

    catalog = open_cli_catalog(root)
    try:
        known = {record.name for record in catalog.policies()}
    finally:
        catalog.close()
    if policy not in known:
        raise click.ClickException(f"no policy named {policy!r}")
    try:
        tag_matcher(stream_pattern)
        declarations.check(Declaration("stream", kind, f"stream.{SUFFIXES[kind]}", params))
    except (TransformError, ValueError) as problem:
        raise click.ClickException(str(problem)) from None
    rule = declarations.Rule(policy, stream_pattern, kind, params)
    with declarations.changing(root) as declared:
        declared.rules = [
            other
            for other in declared.rules
            if (other.policy, other.stream_pattern, other.kind) != (policy, stream_pattern, kind)
        ]
        declared.rules.append(rule)
    click.echo(f"policy {policy}: streams {stream_pattern} -> <stream>.{SUFFIXES[kind]} ({kind})")


@policy_transform.command("remove")
@ROOT_OPTION
@click.argument("policy")
@click.option("--stream-pattern", default="**", show_default=True)
@KIND_OPTION
def policy_remove(root: str, policy: str, stream_pattern: str, kind: str) -> None:
    """Remove a policy's rule; the arrays it wrote stay."""
    with declarations.changing(root) as declared:
        kept = [
            rule
            for rule in declared.rules
            if (rule.policy, rule.stream_pattern, rule.kind) != (policy, stream_pattern, kind)
        ]
        found = len(kept) != len(declared.rules)
        declared.rules = kept
    if not found:
        raise click.ClickException(f"policy {policy} has no {kind} rule for {stream_pattern}")


@click.command()
@ROOT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(root: str, as_json: bool) -> None:
    """Transformations: progress and failures, as the running service last wrote them.

    Exits 1 when one has failed.
    """
    document = read_status(root)
    if as_json:
        click.echo(json.dumps(document, indent=1))
    else:
        click.echo(f"transformations (Dask on {document.get('compute') or '-'}):")
        for entry in document["transforms"]:
            click.echo("  " + _line(entry))
        if not document["transforms"]:
            click.echo("  none declared")
    if any(entry["state"] == FAILED for entry in document["transforms"]):
        raise SystemExit(1)


def _line(status: dict) -> str:
    consumed = min((out["consumed"] for out in status["outputs"].values()), default=0)
    size = status["stream_size"]
    percent = 100.0 if size == 0 else math.floor(1000 * consumed / size) / 10
    rows = ", ".join(f"{name}: {out['rows']} rows" for name, out in status["outputs"].items())
    line = (
        f"{status['output']}\t{status['state']}\t{status['stream']} ({status['kind']}) "
        f"{consumed}/{size} bytes ({percent}%)\t{rows or 'no rows yet'}"
    )
    if status["message"]:
        line += f"\t{status['message']}"
    return line
