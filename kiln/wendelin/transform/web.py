"""Transformations on the web: ``GET /api/transforms`` (JSON) and a section of the index page.

An account sees the transformations of the streams it may read (a reader sees them all).
"""

import html
from dataclasses import asdict

from aiohttp import web

from kiln.wendelin.httputil import require_account, service_of
from kiln.wendelin.service import Account
from kiln.wendelin.transform.model import FAILED
from kiln.wendelin.transform.runner import Runner, Status

RUNNER: web.AppKey[Runner] = web.AppKey("transform-runner", Runner)


def attach(app: web.Application, runner: Runner) -> None:
    app[RUNNER] = runner
    app.router.add_get("/api/transforms", list_transforms)


def visible(request: web.Request, account: Account) -> list[Status]:
    if RUNNER not in request.app:
        return []
    streams = service_of(request).streams
    shown = []
    for status in request.app[RUNNER].statuses():
        stream = streams.get(status.stream)
        if account.policy is None or (stream is not None and account.may_read(stream)):
            shown.append(status)
    return shown


async def list_transforms(request: web.Request) -> web.Response:
    account = require_account(request)
    return web.json_response(
        [{**asdict(status), "consumed": status.consumed} for status in visible(request, account)]
    )


def section(request: web.Request, account: Account) -> str:
    """The index page's "Transformations" table (empty when none is declared)."""
    rows = []
    for status in visible(request, account):
        size = status.stream_size
        percent = 100.0 if size == 0 else min(100.0, 100 * status.consumed / size)
        arrays = ", ".join(
            f"{html.escape(name)} ({output['rows']} rows)"
            for name, output in status.outputs.items()
        )
        state = html.escape(status.state)
        if status.state == FAILED:
            state = f"<strong>{state}</strong>"
        rows.append(
            f"<tr><td>{html.escape(status.stream)}</td><td>{html.escape(status.kind)}</td>"
            f"<td>{arrays or html.escape(status.output)}</td><td>{state}</td>"
            f"<td class=n>{percent:.1f}%</td><td>{html.escape(status.message)}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<h2>Transformations</h2><table><tr><th>stream</th><th>kind</th><th>arrays</th>"
        "<th>state</th><th>consumed</th><th>message</th></tr>" + "".join(rows) + "</table>"
    )
