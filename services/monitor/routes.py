"""HTTP of the monitor: ``/api/v1/monitor/...`` JSON and SSE, and the ``/dashboard`` page.

Who sees what: a coordinator his own centre; an admin every centre, the sites, the
consortium figures and the metrics as JSON.  Other roles get 403 (the figures carry
request ids and origins, no patient names).  Reads of these aggregates are not audited:
a dashboard polls all day and they name no patient.

The stream is ``text/event-stream`` behind the same bearer token as every API call: the
dashboard reads it with ``fetch`` (which can send the ``Authorization`` header), so the
token never appears in a URL, a server log or the browser history.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from ..core.auth import Principal
from ..core.http import Problem, json_response, require_role, runtime
from ..core.instruments import http_middleware
from ..core.metrics import install_runtime_collectors
from ..core.runtime import Runtime
from .service import settings_of
from .views import MonitorViews

routes = web.RouteTableDef()
DASHBOARD = Path(__file__).resolve().parent / "dashboard"
STOPPING = web.AppKey("monitor.stopping", asyncio.Event)


def _views(request: web.Request) -> MonitorViews:
    return MonitorViews.of(runtime(request))


def _centres_of(request: web.Request, who: Principal) -> list[str]:
    rt = runtime(request)
    if who.role == "coordinator":
        return [c for c in who.centre_ids if c in rt.consortium.centres]
    return list(rt.consortium.centres)


@routes.get("/api/v1/monitor/centres")
async def centres(request: web.Request) -> web.Response:
    who = require_role(request, "coordinator", "admin")
    return json_response(await _views(request).centres(_centres_of(request, who)))


@routes.get("/api/v1/monitor/centres/{centre}")
async def centre(request: web.Request) -> web.Response:
    who = require_role(request, "coordinator", "admin")
    wanted = request.match_info["centre"]
    if wanted not in _centres_of(request, who):
        raise Problem(404, f"no centre {wanted!r} in your view")
    return json_response(await _views(request).centres([wanted]))


@routes.get("/api/v1/monitor/sites")
async def sites(request: web.Request) -> web.Response:
    require_role(request, "admin")
    return json_response(await _views(request).sites())


@routes.get("/api/v1/monitor/consortium")
async def consortium(request: web.Request) -> web.Response:
    require_role(request, "admin")
    return json_response(await _views(request).consortium_figures())


@routes.get("/api/v1/monitor/metrics")
async def metrics_json(request: web.Request) -> web.Response:
    """This process's ``/metrics`` figures as JSON."""
    require_role(request, "admin")
    return json_response({"metrics": await install_runtime_collectors(runtime(request)).as_json()})


async def snapshot(views: MonitorViews, who: Principal, centre_ids: list[str]) -> dict[str, Any]:
    user = {"id": who.user_id, "role": who.role, "centre": who.centre, "centres": list(who.centre_ids)}
    out: dict[str, Any] = {"user": user,
                           **await views.centres(centre_ids)}
    if who.role == "admin":
        out["sites"] = (await views.sites())["sites"]
        out["consortium"] = await views.consortium_figures()
    return out


@routes.get("/api/v1/monitor/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a ``snapshot`` now, then whenever the read model changes (and every
    ``stream_refresh`` seconds, since risks move with the clock alone)."""
    who = require_role(request, "coordinator", "admin")
    rt = runtime(request)
    views, ids = _views(request), _centres_of(request, who)
    settings = settings_of(rt)
    stopping = request.app.get(STOPPING) or asyncio.Event()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    last_marker: object = object()
    last_push = 0.0
    try:
        while not stopping.is_set():
            marker = await views.marker()
            if marker != last_marker or time.monotonic() - last_push >= settings.stream_refresh:
                body = json.dumps(await snapshot(views, who, ids), ensure_ascii=False, separators=(",", ":"))
                await response.write(f"event: snapshot\nid: {marker or 0}\ndata: {body}\n\n".encode())
                last_marker, last_push = marker, time.monotonic()
            try:
                await asyncio.wait_for(stopping.wait(), timeout=settings.stream_interval)
            except TimeoutError:
                pass
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    return response


PAGES = {"dashboard": ("index.html", "dashboard.js", "dashboard.css"),
         "figures": ("figures.html", "figures.js", "figures.css")}  # the consortium's figures (统计分析)


@cache
def dashboard_page(name: str = "dashboard") -> tuple[bytes, str]:
    """The page with its script and style inlined, and a CSP that allows exactly those (by hash)."""
    html, script, style = ((DASHBOARD / f).read_text("utf-8") for f in PAGES[name])

    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"
    page = html.replace("<style></style>", f"<style>{style}</style>").replace(
        "<script></script>", f"<script>{script}</script>")
    assert not re.search(r"<script[^>]*\ssrc=", page), "the dashboard loads nothing from elsewhere"
    csp = (f"default-src 'none'; script-src {sha(script)}; style-src {sha(style)}; connect-src 'self'; "
           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return page.encode(), csp


async def dashboard(_: web.Request) -> web.Response:
    return page("dashboard")


async def figures_page(_: web.Request) -> web.Response:
    return page("figures")


def page(name: str) -> web.Response:
    body, csp = dashboard_page(name)
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": csp, "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff"})


def install(app: web.Application, rt: Runtime) -> None:
    """HTTP metrics for every request, the public ``/dashboard`` page, streams closed at shutdown."""
    app.middlewares.insert(0, http_middleware(rt))
    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/figures", figures_page)
    app[STOPPING] = asyncio.Event()

    async def stop_streams(app: web.Application) -> None:
        app[STOPPING].set()
    app.on_shutdown.append(stop_streams)


__all__ = ["install", "routes"]
