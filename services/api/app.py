"""The aiohttp application factory: routes in one place, dependencies passed in.

Middlewares, outermost first: every error becomes ``application/problem+json``; then every
request but the public paths must carry a valid, unrevoked bearer token or a desk session cookie.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from aiohttp import web

from ..core.health import add_health_routes
from ..core.runtime import Runtime
from .auth import auth_middleware, parse_networks
from .auditing import AuditWriter
from ..core.users import UserDirectory
from .context import AUDIT, CLOCK, DIRECTORY, RUNTIME, TRUSTED_PROXIES
from .desks import install as install_desks
from ..monitor.routes import install as install_monitor
from .dicomweb import add_dicomweb
from .problems import problem_middleware
from .routes import add_routes
from .viewer.routes import routes as viewer_routes

__all__ = ["RUNTIME", "create_app"]


def create_app(rt: Runtime, *, trusted_proxies: str | None = None,
               clock: Callable[[], float] = time.time) -> web.Application:
    """``trusted_proxies``: comma-separated addresses/networks whose ``X-Forwarded-For`` is
    believed (default ``YILIAN_TRUSTED_PROXIES``; none).  ``clock``: the wall clock of sessions."""
    directory = UserDirectory(rt)
    app = web.Application(client_max_size=64 * 1024**2,
                          middlewares=[problem_middleware, auth_middleware(rt, clock=clock, directory=directory)])
    app[RUNTIME] = rt
    app[DIRECTORY] = directory
    app[CLOCK] = clock
    proxies = trusted_proxies if trusted_proxies is not None else os.environ.get("YILIAN_TRUSTED_PROXIES", "")
    app[TRUSTED_PROXIES] = parse_networks(proxies)
    app[AUDIT] = AuditWriter(rt.store)
    add_health_routes(app, rt)
    add_routes(app)
    add_dicomweb(app)
    app.router.add_routes(viewer_routes)  # the OHIF Viewer at /viewer/ (docs/desks.md)
    install_monitor(app, rt)  # /dashboard, HTTP metrics
    install_desks(app)  # /signin, /desk pages and their static files (docs/desks.md)
    return app
