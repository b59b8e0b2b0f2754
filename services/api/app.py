"""The aiohttp application factory: routes in one place, dependencies passed in."""

from __future__ import annotations

from aiohttp import web

from ..core.health import add_health_routes
from ..core.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)


def create_app(rt: Runtime) -> web.Application:
    app = web.Application(client_max_size=64 * 1024**2)
    app[RUNTIME] = rt
    add_health_routes(app, rt)
    return app
