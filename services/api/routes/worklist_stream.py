"""``GET /api/v1/worklist/stream``: the centre's worklist changes, live (Server-Sent Events).

Each event says which request changed and how (``reading.queued``, ``reading.claimed``,
``report.signed``, ...) with its id, new state and priority: no patient, no text, so a push is
not a read of patient data and is not audited (as the monitor's figures); the reader's desk then
reads ``GET /api/v1/worklist`` (audited) as any client would.  It follows the store's event log
like the results stream, so ``Last-Event-ID`` resumes where a dropped connection stopped.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ...core.auth import Principal
from ...core.store.port import LoggedEvent
from ..context import require_role
from ..validation import known_query
from .results import ResultFeed, follow_log

routes = web.RouteTableDef()
CHANGES = ("reading.queued", "reading.claimed", "reading.released", "reading.lease_expired", "reading.assigned",
           "reading.moved", "reading.escalated", "reading.returned", "reading.cancelled", "reading.priority_raised",
           "reading.sla_at_risk", "report.signed", "report.submitted", "report.reviewed", "report.sent_back")
SHOWN = ("request_id", "state", "priority", "kind", "centre")
CENTRES = ("centre", "from_centre", "to_centre", "routed_centre")  # a move or escalation concerns both ends
FEED = web.AppKey("worklist_feed", ResultFeed)


def concerns(who: Principal, data: dict[str, Any]) -> bool:
    return who.centre is not None and any(data.get(k) == who.centre for k in CENTRES)


def change(logged: LoggedEvent) -> bytes:
    event = logged.event
    body = {"type": event.type, "time": event.time, **{k: event.data.get(k) for k in SHOWN}}
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return f"id: {logged.seq}\nevent: {event.type}\ndata: {text}\n\n".encode()


@routes.get("/api/v1/worklist/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    who = require_role(request, "reader", "coordinator")
    known_query(request, ())

    async def send(resp: web.StreamResponse, logged: LoggedEvent) -> None:
        if concerns(who, logged.event.data):
            await resp.write(change(logged))
    return await follow_log(request, request.app[FEED], CHANGES, send)


def setup(app: web.Application) -> None:
    from ..context import RUNTIME
    app.router.add_routes(routes)
    app[FEED] = ResultFeed(app[RUNTIME].store, types=CHANGES, poll=0.2)

    async def start(app: web.Application) -> None:
        await app[FEED].start()

    async def stop(app: web.Application) -> None:
        await app[FEED].close()
    app.on_startup.append(start)
    app.on_shutdown.append(stop)
