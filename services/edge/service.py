"""``yilian edge``: the clinic's local DICOM node, the forward queue, the heartbeat and the
local status page, in one process on the embedded store (SQLite + files under YILIAN_DATA_DIR).

The local node is the gateway itself (journal first, Success only when durable), limited to the
clinic's own modality AEs: another organisation's modality has no business at this edge, and
whatever it sent would reach the centre as this clinic's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import json
import logging
import time
from typing import Any

from aiohttp import web

from ..core.consortium import Consortium
from ..core.localtime import LocalTime
from ..core.runtime import Runtime
from .forwarder import Forwarder
from .link import CentreLink, LinkError
from .settings import EdgeSettings
from .throttle import Throttle

log = logging.getLogger("yilian.edge")


def clinic_only(consortium: Consortium, organization: str) -> Consortium:
    """The consortium as this edge's node sees it: only the clinic's own AEs are known."""
    if organization not in consortium.organizations:
        raise SystemExit(f"YILIAN_EDGE_ORGANIZATION {organization!r} is not an organisation of the consortium file")
    orgs = {oid: org if oid == organization else dataclasses.replace(org, modality_aes=(), workstation_aes=())
            for oid, org in consortium.organizations.items()}
    return dataclasses.replace(consortium, organizations=orgs)


class EdgeService:
    name = "edge"

    def __init__(self, rt: Runtime, settings: EdgeSettings) -> None:
        self.rt, self.settings = rt, settings
        self.link = CentreLink(settings.centre_url, settings.token, ca_file=settings.ca_file,
                               throttle=Throttle(settings.bytes_per_second), compress=settings.compress)
        self.forwarder = Forwarder(rt, self.link, settings)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.link.open()
        await self.forwarder.start()
        self._heartbeat = asyncio.create_task(self._beat(), name="edge:heartbeat")
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.rt.settings.bind_host, self.rt.settings.http_port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self.forwarder.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.link.close()

    async def _beat(self) -> None:
        while True:
            try:
                status = await self.forwarder.status()
                await self.link.heartbeat({k: status[k] for k in ("backlog_studies", "backlog_instances",
                                                                   "bytes_pending", "rate_bytes_per_second",
                                                                   "last_success_at", "last_error")})
            except LinkError as exc:
                log.info("heartbeat not delivered", extra={"error": str(exc)})
            except Exception:
                log.exception("heartbeat failed")
            # While the link is down the heartbeat is the probe that finds it back (then every
            # waiting study goes at once): a link back is used within seconds.
            beaten = time.monotonic()
            while True:
                await asyncio.sleep(min(self.settings.heartbeat_seconds, self.settings.probe_seconds))
                if self.link.up is False or time.monotonic() - beaten >= self.settings.heartbeat_seconds:
                    break

    # --- the local status: JSON, Prometheus, and a page for the clinic's technician ------------
    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.forwarder.status(), dumps=lambda o: json.dumps(o, ensure_ascii=False))

    async def _metrics(self, request: web.Request) -> web.Response:
        s = await self.forwarder.status()
        lines = [
            "# HELP yilian_edge_backlog_studies Studies not yet complete at the centre.",
            "# TYPE yilian_edge_backlog_studies gauge", f"yilian_edge_backlog_studies {s['backlog_studies']}",
            "# HELP yilian_edge_backlog_instances Instances not yet held by the centre.",
            "# TYPE yilian_edge_backlog_instances gauge", f"yilian_edge_backlog_instances {s['backlog_instances']}",
            "# HELP yilian_edge_bytes_pending Bytes of instances not yet sent.",
            "# TYPE yilian_edge_bytes_pending gauge", f"yilian_edge_bytes_pending {s['bytes_pending']}",
            "# HELP yilian_edge_rate_bytes_per_second Wire rate of the last STOW request.",
            "# TYPE yilian_edge_rate_bytes_per_second gauge",
            f"yilian_edge_rate_bytes_per_second {s['rate_bytes_per_second']}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _page(self, request: web.Request) -> web.Response:
        s = await self.forwarder.status()
        tz: LocalTime = self.rt.local_time
        rows = "".join(
            f"<tr><td>{html.escape(p['id'])}</td><td>{p['sent']}/{p['instances']}</td><td>{p['attempts']}</td>"
            f"<td>{html.escape(p['last_error'] or '')}</td></tr>" for p in s["studies"])
        last = tz.for_people(s["last_success_at"]) if s["last_success_at"] else "—"
        body = f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="5">
<title>医联前置机 Edge</title><style>body{{font-family:sans-serif;margin:1rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2rem .5rem}}.bad{{color:#b00}}</style></head><body>
<h1>医联前置机 <small>Edge · {html.escape(self.settings.organization)}</small></h1>
<p>待发检查 Studies pending: <b>{s['backlog_studies']}</b> · 待发图像 Instances: <b>{s['backlog_instances']}</b> ·
待发字节 Bytes: <b>{s['bytes_pending']}</b> · 速率 Rate: <b>{s['rate_bytes_per_second']}</b> B/s ·
最近成功 Last success: <b>{html.escape(last)}</b></p>
<p class="bad">{html.escape(s['last_error'] or '')}</p>
<table><tr><th>检查 Study</th><th>已发 Sent</th><th>重试 Attempts</th><th>错误 Error</th></tr>{rows}</table>
</body></html>"""
        return web.Response(text=body, content_type="text/html")


async def run_edge(settings: Any, edge: EdgeSettings, *, ready: Any = None, stop: asyncio.Event | None = None) -> None:
    """The edge process: runtime, the clinic-only gateway, the edge service; until ``stop``."""
    from ..core.runtime import build_runtime
    from ..pacs_gateway import GatewayService
    rt = await build_runtime(settings)
    rt.consortium = clinic_only(rt.consortium, edge.organization)
    stop = stop or asyncio.Event()
    gateway, service = GatewayService(rt), EdgeService(rt, edge)
    try:
        await gateway.start()
        await service.start()
        rt.services.extend([gateway, service])
        if ready is not None:
            ready(rt, gateway, service)
        await stop.wait()
    finally:
        for part in (service, gateway):
            with contextlib.suppress(Exception):
                await part.stop()
        await rt.blobs.close()
        await rt.store.close()
