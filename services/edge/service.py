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
import json
import logging
import math
import time
from typing import Any

from aiohttp import web

from ..core.consortium import Consortium
from ..core.events import utc_now
from ..core.runtime import Runtime
from . import page
from .forwarder import Forwarder
from .link import CentreLink, LinkError
from .linkstate import CONNECTED
from .results import ResultFollower
from .settings import EdgeSettings
from .throttle import Throttle
from .worklist import WorklistCopy, metrics

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
        self.results = ResultFollower(rt, self.link, settings)
        self.worklist = WorklistCopy(rt, self.link, settings)
        self.link.on_restored(self.worklist.wake)  # the link is back: the copy need not wait for its backoff
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.link.open()
        await self.forwarder.start()
        await self.results.start()
        await self.worklist.start()
        self._heartbeat = asyncio.create_task(self._beat(), name="edge:heartbeat")
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/page.js", self._script)
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
        await self.results.stop()
        await self.worklist.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.link.close()

    async def _beat(self) -> None:
        while True:
            try:
                status = {**await self.forwarder.status(), **await self.results.status()}
                steps = (await self.worklist.status())["steps_pending"]
                await self.link.heartbeat({**{k: status[k] for k in ("backlog_studies", "backlog_instances",
                                                                     "bytes_pending", "rate_bytes_per_second",
                                                                     "results_pending", "results_refused",
                                                                     "last_success_at",
                                                                     "last_error")},
                                           "procedure_steps_pending": steps})
            except LinkError as exc:
                log.info("heartbeat not delivered", extra={"error": str(exc)})
            except Exception:
                log.exception("heartbeat failed")
            # While the link is down the heartbeat is the probe that finds it back (then every
            # waiting study goes at once): a link back is used within seconds.
            beaten = time.monotonic()
            while True:
                await asyncio.sleep(min(self.settings.heartbeat_seconds, self.settings.probe_seconds))
                if self.link.down or time.monotonic() - beaten >= self.settings.heartbeat_seconds:
                    break

    # --- the local status: JSON, Prometheus, and a page for the clinic's technician (page.py) ----
    async def status(self) -> dict[str, Any]:
        local = {**await self.forwarder.status(), **await self.results.status(),
                 "worklist": await self.worklist.status()}
        return await page.edge_status(self.rt.store, local, self.link.watch)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.status(), dumps=lambda o: json.dumps(o, ensure_ascii=False))

    async def _metrics(self, request: web.Request) -> web.Response:
        s = await self.status()
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
            "# HELP yilian_edge_results_pending Results not yet stored at the terminal and acknowledged.",
            "# TYPE yilian_edge_results_pending gauge", f"yilian_edge_results_pending {s['results_pending']}",
            "# HELP yilian_edge_results_delivered Results stored at the terminal and acknowledged to the centre.",
            "# TYPE yilian_edge_results_delivered gauge", f"yilian_edge_results_delivered {s['results_delivered']}",
            *metrics(s["worklist"]),
            "# HELP yilian_edge_link_up 1 while the centre answers the edge, 0 in an outage or when it refuses.",
            "# TYPE yilian_edge_link_up gauge", f"yilian_edge_link_up {int(self.link.watch.state == CONNECTED)}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _page(self, request: web.Request) -> web.Response:
        org = self.rt.consortium.organizations.get(self.settings.organization)
        try:  # ?refresh=N: how often the page refreshes itself (seconds)
            refresh = float(request.query.get("refresh", page.REFRESH_SECONDS))
        except ValueError:
            refresh = page.REFRESH_SECONDS
        refresh = min(max(refresh, 1.0), 60.0) if math.isfinite(refresh) else page.REFRESH_SECONDS
        body = page.render(await self.status(), tz=self.rt.local_time, now=utc_now(), refresh=refresh,
                           organization_name=org.name if org else self.settings.organization)
        return web.Response(text=body, content_type="text/html", headers=page.HEADERS)

    async def _script(self, request: web.Request) -> web.Response:
        return web.Response(text=page.SCRIPT, content_type="text/javascript", headers=page.HEADERS)


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
