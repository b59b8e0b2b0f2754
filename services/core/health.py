"""Liveness and readiness, shared by the api and by every ``yilian serve`` process."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .runtime import Runtime


async def readiness(rt: Runtime) -> dict[str, str]:
    """What is not ready, by component (empty when ready)."""
    problems: dict[str, str] = {}
    for name, check in (("store", rt.store.ping), ("bus", rt.bus.ping)):
        try:
            await asyncio.wait_for(check(), timeout=2)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            problems[name] = str(exc) or type(exc).__name__
    for service in rt.services:
        ready = getattr(service, "ready", True)
        if not ready:
            problems[service.name] = "not started"
    return problems


def add_health_routes(app: web.Application, rt: Runtime) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        problems = await readiness(rt)
        if problems:
            return web.json_response({"status": "unavailable", "problems": problems}, status=503)
        return web.json_response({"status": "ready", "services": [s.name for s in rt.services]})

    async def metrics(_: web.Request) -> web.Response:
        from .metrics import CONTENT_TYPE, install_runtime_collectors
        text = await install_runtime_collectors(rt).exposition()
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)  # Prometheus text format, every process
