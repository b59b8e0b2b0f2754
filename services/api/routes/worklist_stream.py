"""``GET /api/v1/worklist/stream``: the centre's worklist changes, live (Server-Sent Events).

Each event says which request changed and how (``reading.queued``, ``reading.claimed``,
``report.signed``, ...) with its id, new state and priority: no patient, no text, so a push is
not a read of patient data and is not audited (as the monitor's figures); the reader's desk then
reads ``GET /api/v1/worklist`` (audited) as any client would.  It follows the store's event log
like the results stream, so ``Last-Event-ID`` resumes where a dropped connection stopped.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from ...core.auth import Principal
from ...core.store.port import LoggedEvent
from ..context import require_role, runtime
from ..problems import Problem
from ..validation import known_query
from .results import ResultFeed, _heartbeat_seconds

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
    raw_last = request.headers.get("Last-Event-ID", "").strip()
    if raw_last and not raw_last.isdigit():
        raise Problem(400, f"Last-Event-ID must be an event id from this stream, not {raw_last!r}")
    feed = request.app[FEED]
    queue = feed.subscribe()  # before the replay, so nothing falls between the two
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        await resp.prepare(request)
        await resp.write(b"retry: 3000\n: connected\n\n")
        sent = int(raw_last) if raw_last else 0
        if raw_last:
            store = runtime(request).store
            while len(missed := await store.read_log(sent, limit=500, types=CHANGES)) > 0:
                for logged in missed:
                    if concerns(who, logged.event.data):
                        await resp.write(change(logged))
                    sent = logged.seq
                if len(missed) < 500:
                    break
        heartbeat = _heartbeat_seconds()
        while True:
            try:
                logged = await asyncio.wait_for(queue.get(), timeout=heartbeat)
            except asyncio.TimeoutError:
                await resp.write(b": heartbeat\n\n")
                continue
            if logged is None:
                break
            if logged.seq > sent and concerns(who, logged.event.data):
                await resp.write(change(logged))
                sent = logged.seq
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.subscribers.discard(queue)
    return resp


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
