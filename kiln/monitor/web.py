"""The monitor page, its JSON status endpoint and an Atom feed of promise changes.

Everything but /healthz needs the instance's generated account (HTTP Basic).  Plots are
server-side SVG charts (:mod:`kiln.wendelin.plot`; no script on this page), drawn from the
latest entries of each resource stream read through Wendelin's stream API; each plot links to its
stream's page there.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hmac
import html
import logging
import time
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web

from kiln.monitor.promises import Result
from kiln.monitor.service import MonitorState
from kiln.wendelin import plot

log = logging.getLogger("kiln.monitor.web")

STATE: web.AppKey[MonitorState] = web.AppKey("state", MonitorState)
WENDELIN: web.AppKey[tuple[str, str]] = web.AppKey("wendelin", tuple)  # the policy's account
PLOTTED_ENTRIES = 90  # 15 minutes at the default 10 s interval
SYSTEM_FIELDS = ("cpu_percent", "memory_percent", "load1", "disk_percent")
PROGRAM_FIELDS = ("cpu_percent", "rss_mib", "open_files", "restarts")
HISTORY_SHOWN = 20


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


def _authorized(request: web.Request, user: str, password: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given_user, _, given_password = base64.b64decode(token).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given_user.encode(), user.encode()) & hmac.compare_digest(
        given_password.encode(), password.encode()
    )


def make_app(
    state: MonitorState, credentials: dict[str, str], wendelin_auth: tuple[str, str]
) -> web.Application:
    @web.middleware
    async def require_login(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path == "/healthz" or _authorized(
            request, credentials["user"], credentials["password"]
        ):
            return await handler(request)
        return web.Response(
            status=401,
            text="log in with the monitor's account (etc/monitor-credentials.json)\n",
            headers={"WWW-Authenticate": 'Basic realm="kiln monitor"'},
        )

    app = web.Application(middlewares=[require_login])
    app[STATE] = state
    app[WENDELIN] = wendelin_auth
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", page)
    app.router.add_get("/status.json", status_json)
    app.router.add_get("/feed.atom", feed)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def status(state: MonitorState) -> dict:
    """The document /status.json answers and `kiln monitor status` prints."""
    promises = []
    for result in state.promises:
        history = state.store.history(result.instance, result.promise, HISTORY_SHOWN)
        promises.append(
            {
                "instance": result.instance,
                "promise": result.promise,
                "ok": result.ok,
                "message": result.message,
                "duration": result.duration,
                "time": _iso(result.time),
                "since": _iso(state.store.since(result.instance, result.promise)),
                "history": [
                    {"time": _iso(h.time), "ok": h.ok, "message": h.message, "duration": h.duration}
                    for h in history
                ],
            }
        )
    failing = [p for p in promises if not p["ok"]]
    return {
        "host": state.settings.hostname,
        "generated": _iso(time.time()),
        "healthy": not failing and bool(promises),
        "promises_failing": len(failing),
        "promises": promises,
        "resources": {
            tag: {"time": _iso(when), **record} for tag, (when, record) in state.latest.items()
        },
        "agent": {
            "cpu_percent": state.agent_cpu_percent,
            "samples": state.samples,
            "sample_interval": state.settings.sample_interval,
            "last_sample": _iso(state.last_sample),
            "last_promise_run": _iso(state.last_promise_run),
        },
    }


async def status_json(request: web.Request) -> web.Response:
    return web.json_response(status(request.app[STATE]))


async def feed(request: web.Request) -> web.Response:
    state = request.app[STATE]
    host = escape(state.settings.hostname)
    changes = state.store.changes(50)
    updated = _iso(changes[0][1].time if changes else time.time())
    entries = "".join(
        "<entry>"
        f"<id>tag:kiln-monitor,{host}:change-{number}</id>"
        f"<title>{'PASS' if r.ok else 'FAIL'} {escape(r.instance)}: {escape(r.promise)}</title>"
        f"<updated>{_iso(r.time)}</updated>"
        f"<content type='text'>{escape(r.message)}</content>"
        "</entry>"
        for number, r in changes
    )
    text = (
        "<?xml version='1.0' encoding='utf-8'?>"
        "<feed xmlns='http://www.w3.org/2005/Atom'>"
        f"<id>tag:kiln-monitor,{host}:promises</id>"
        f"<title>Promise changes on {host}</title><updated>{updated}</updated>"
        f"<link rel='self' href='{escape(str(request.url))}'/>"
        f"<author><name>kiln monitor</name></author>{entries}</feed>"
    )
    return web.Response(text=text, content_type="application/atom+xml")


async def _entries(session: aiohttp.ClientSession, url: str, stream: str) -> list[list] | None:
    try:
        async with session.get(
            f"{url}/api/streams/{stream}/entries",
            params={"start": str(-PLOTTED_ENTRIES), "format": "json"},
        ) as response:
            if response.status != 200:
                return None
            return await response.json()
    except (aiohttp.ClientError, TimeoutError):
        return None


def _project(entries: list[list], fields: tuple[str, ...]) -> list[list]:
    return [[t, {f: r[f] for f in fields if f in r}] for t, r in entries if isinstance(r, dict)]


def _history_marks(history: list[Result]) -> str:
    marks = "".join(
        f"<span class='mark {'ok' if h.ok else 'fail'}' title='{_iso(h.time)} "
        f"{html.escape(h.message, quote=True)}'></span>"
        for h in reversed(history)
    )
    return f"<span class=history>{marks}</span>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; } h3 { font-size: 1em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #ddd; }
td { vertical-align: top; }
th { background: #f3f5f7; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.state { font-weight: bold; padding: .1em .5em; border-radius: .3em; color: white; }
.state.ok { background: #2ca02c; } .state.fail { background: #d62728; }
.mark { display: inline-block; width: .55em; height: 1em; margin-right: 1px; }
.mark.ok { background: #2ca02c; } .mark.fail { background: #d62728; }
.muted { color: #777; } .summary { font-size: 1.1em; } .history { white-space: nowrap; }
"""


async def page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    document = status(state)
    rows = []
    for promise, result in zip(document["promises"], state.promises, strict=True):
        ok = promise["ok"]
        history = state.store.history(result.instance, result.promise, HISTORY_SHOWN)
        rows.append(
            f"<tr class='{'ok' if ok else 'fail'}'>"
            f"<td><span class='state {'ok' if ok else 'fail'}'>{'PASS' if ok else 'FAIL'}"
            f"</span></td><td>{html.escape(result.instance)}</td>"
            f"<td>{html.escape(result.promise)}</td><td>{html.escape(result.message)}</td>"
            f"<td>{promise['since']}</td><td class=n>{result.duration * 1000:.0f} ms</td>"
            f"<td>{_history_marks(history)}</td></tr>"
        )
    rows.sort(key=lambda row: "class='ok'" in row)  # failing promises first
    failing = document["promises_failing"]
    summary = (
        f"<p class=summary>{len(rows)} promises, <b>{failing} failing</b>. "
        f"Last sample {document['agent']['last_sample'] or 'not yet'}; "
        f"promises run {document['agent']['last_promise_run'] or 'not yet'} "
        f"(every {state.settings.promise_interval:g} s). "
        "<a href='/status.json'>JSON</a> · <a href='/feed.atom'>Atom feed of changes</a></p>"
    )
    plots = await _plots(request, state)
    body = (
        summary + "<h2>Promises</h2><table><tr><th>state</th><th>instance</th><th>promise</th>"
        "<th>message</th><th>since</th><th>duration</th><th>history (oldest first)</th></tr>"
        + ("".join(rows) or "<tr><td colspan=7 class=muted>no result yet</td></tr>")
        + "</table><h2>Resources</h2>"
        + plots
    )
    title = f"Monitor of {state.settings.hostname}"
    text = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta http-equiv=refresh content=30><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=text, content_type="text/html")


async def _plots(request: web.Request, state: MonitorState) -> str:
    url = state.settings.wendelin_url
    user, password = request.app[WENDELIN]
    system_tag = f"monitor.{state.settings.hostname}.system"
    tags = sorted(state.latest, key=lambda tag: (tag != system_tag, tag))
    sections = []
    timeout = aiohttp.ClientTimeout(total=10)
    auth = aiohttp.BasicAuth(user, password)
    async with aiohttp.ClientSession(auth=auth, timeout=timeout) as session:
        for tag in tags:
            fields = SYSTEM_FIELDS if tag == system_tag else PROGRAM_FIELDS
            entries = await _entries(session, url, tag)
            chart = plot.svg(plot.numeric_series(_project(entries or [], fields)))
            latest = state.latest[tag][1]
            values = " · ".join(f"{f} {latest[f]:g}" for f in fields if f in latest)
            link = f"{url}/streams/{html.escape(tag)}"
            sections.append(
                f"<h3><a href='{link}'>{html.escape(tag)}</a></h3>"
                f"<p class=muted>latest: {html.escape(values)}</p>"
                + (chart or "<p class=muted>the plot appears after two samples</p>")
            )
    return "".join(sections) or "<p class=muted>no sample yet</p>"
