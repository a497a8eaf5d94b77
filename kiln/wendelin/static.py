"""The pages' static files: our scripts and styles, and dygraphs from its npm package.

Every file is read once, when the app is made, and served from memory under a fixed name: no
path from a request ever reaches the file system, and no request reads the disk. dygraphs
(npm ``dygraphs``, pinned in ``frontend/package-lock.json``) is never fetched from a CDN: it
comes from the directory given by ``kiln wendelin serve --dygraphs`` (the release's
``dygraphs`` part), or else from the checkout's ``frontend/node_modules`` after
``npm ci --prefix kiln/wendelin/frontend``. Without it the pages still work, with a message
in place of each chart.
"""

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

_OWN = Path(__file__).with_name("static")
# Where `npm ci --prefix kiln/wendelin/frontend` puts the package in a checkout.
CHECKOUT_DYGRAPHS = Path(__file__).with_name("frontend") / "node_modules" / "dygraphs" / "dist"
DYGRAPHS_FILES = ("dygraph.min.js", "dygraph.min.css")
# Shown in place of a chart when dygraphs is missing (HTML; no script needed to see it).
MISSING_DYGRAPHS = (
    "Charts need dygraphs, which this server does not have: run "
    "<code>npm ci --prefix kiln/wendelin/frontend</code> in the checkout, or start it with "
    "<code>kiln wendelin serve --dygraphs DIR</code> (the directory holding "
    "<code>dygraph.min.js</code>, from npm's <code>dygraphs</code> package)."
)


class DygraphsMissing(ValueError):
    """An explicitly given dygraphs directory lacks its files."""


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    content_type: str
    etag: str


def _load(path: Path) -> _File:
    body = path.read_bytes()
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return _File(body, kind, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


class StaticFiles:
    """``/static/<file>`` (ours) and ``/static/dygraphs/<file>`` (the npm package's)."""

    def __init__(self, dygraphs: Path | None) -> None:
        self.files = {
            f"/static/{path.name}": _load(path)
            for path in sorted(_OWN.iterdir())
            if path.suffix in (".js", ".css")
        }
        self.has_dygraphs = dygraphs is not None
        if dygraphs is not None:
            for name in DYGRAPHS_FILES:
                self.files[f"/static/dygraphs/{name}"] = _load(dygraphs / name)

    async def serve(self, request: web.Request) -> web.Response:
        found = self.files.get(request.path)
        if found is None:
            raise web.HTTPNotFound(text=f"no static file {request.path}\n")
        headers = {"ETag": found.etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == found.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=found.body, content_type=found.content_type, headers=headers)


def find_dygraphs(given: Path | None) -> Path | None:
    """The dygraphs directory to serve: ``given`` (which must hold the files), else the
    checkout's copy if ``npm ci`` installed it, else None (charts show MISSING_DYGRAPHS)."""
    if given is not None:
        missing = [name for name in DYGRAPHS_FILES if not (given / name).is_file()]
        if missing:
            raise DygraphsMissing(
                f"{given} has no {', '.join(missing)}: give the dist/ directory of npm's "
                "dygraphs package"
            )
        return given
    if all((CHECKOUT_DYGRAPHS / name).is_file() for name in DYGRAPHS_FILES):
        return CHECKOUT_DYGRAPHS
    return None


STATIC: web.AppKey[StaticFiles] = web.AppKey("static", StaticFiles)


def add_routes(app: web.Application, files: StaticFiles) -> None:
    app[STATIC] = files
    # Public code, no data: served without credentials, so that a page's scripts load even
    # before the browser has been asked for a password.
    app.router.add_get("/static/{name}", files.serve)
    app.router.add_get("/static/dygraphs/{name}", files.serve)
