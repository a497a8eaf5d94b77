"""The arrays API's routes (handlers in api.py), registered without importing api.py: it
loads numpy and Zarr, which the service imports at the first array request instead of at
start (see basics.py)."""

from aiohttp import web

ROUTES = (
    ("GET", "/api/arrays", "list_arrays"),
    ("GET", "/api/arrays/{name}", "show_array"),
    ("PUT", "/api/arrays/{name}", "put_array"),
    ("GET", "/api/arrays/{name}/data", "array_data"),
    ("GET", "/api/arrays/{name}/window", "array_window"),
    ("POST", "/api/arrays/{name}/append", "append_rows"),
)


def _handler(name: str):
    async def handle(request: web.Request) -> web.StreamResponse:
        from kiln.wendelin.arrays import api

        return await getattr(api, name)(request)

    handle.__name__ = handle.__qualname__ = name
    return handle


def add_routes(app: web.Application) -> None:
    for method, path, name in ROUTES:
        app.router.add_route(method, path, _handler(name))
