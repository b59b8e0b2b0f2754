"""Results back at the clinic: its inbox, live push (Server-Sent Events), acknowledgement;
and the coordinators' dead letters with re-drive.  Owned by the delivery service (docs/delivery.md).

The live stream follows the store's event log (every deployment shares it), so an event id is
the log's ``seq`` and ``Last-Event-ID`` resumes exactly where a dropped connection stopped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ...core.auth import Principal
from ...core.events import Event
from ...core.store.port import LoggedEvent, Store
from ...delivery import service as delivery
from ...delivery.model import public_delivery, public_result
from ...workflow.policy import sees_request
from ..context import not_found, page, record, remote, require_role, runtime
from ..problems import Problem, json_response
from ..validation import json_body, known_query, query_choice, query_int

log = logging.getLogger("yilian.api")

routes = web.RouteTableDef()

PUSHED = ("result.delivered", "result.acknowledged", "critical.unacknowledged", "result.delivery_failed")
VIEWERS = ("clinic", "reader", "coordinator", "admin")


def sees(who: Principal, doc: dict[str, Any]) -> bool:
    """Results are scoped exactly like the reading requests they answer: a clinic its
    organisation's, a centre's people the ones it signed, an admin all; a clinic's edge (on the
    stream only) its clinic's, to store them at the terminal."""
    if who.role == "edge":
        return doc.get("organization") == who.organization
    return sees_request(who, doc)


def _heartbeat_seconds() -> float:
    raw = os.environ.get("YILIAN_SSE_HEARTBEAT_SECONDS") or "15"
    try:
        return max(0.05, float(raw))
    except ValueError:
        raise SystemExit(f"YILIAN_SSE_HEARTBEAT_SECONDS must be a number of seconds, got {raw!r}") from None


class ResultFeed:
    """One reader of the event log per process, fanned out to every open stream."""

    def __init__(self, store: Store, *, poll: float = 0.25, types: tuple[str, ...] = PUSHED) -> None:
        self.store, self.poll, self.types = store, poll, types
        self.subscribers: set[asyncio.Queue[LoggedEvent | None]] = set()
        self.last = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.last = await self.store.last_seq()
        hooks = getattr(self.store, "on_commit", None)
        if hooks is not None:
            hooks.append(self._wake.set)
        self._task = asyncio.create_task(self._follow(), name="api:result-feed")

    async def close(self) -> None:
        hooks = getattr(self.store, "on_commit", None)
        if hooks is not None and self._wake.set in hooks:
            hooks.remove(self._wake.set)
        for q in self.subscribers:
            q.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self) -> asyncio.Queue[LoggedEvent | None]:
        q: asyncio.Queue[LoggedEvent | None] = asyncio.Queue(maxsize=10_000)
        self.subscribers.add(q)
        return q

    async def _follow(self) -> None:
        while True:
            try:
                self._wake.clear()
                batch = await self.store.read_log(self.last, limit=500, types=self.types)
                for logged in batch:
                    self.last = logged.seq
                    for q in list(self.subscribers):
                        if q.full():  # a stalled client: end its stream; it resumes with Last-Event-ID
                            self.subscribers.discard(q)
                            while not q.empty():
                                q.get_nowait()
                            q.put_nowait(None)
                            continue
                        q.put_nowait(logged)
                if len(batch) == 500:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the store may come back
                log.exception("result feed failed to read the event log")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll)


FEED = web.AppKey("result_feed", ResultFeed)


def setup(app: web.Application) -> None:
    """Routes, and the feed's lifetime (open streams end when the server shuts down)."""
    app.router.add_routes(routes)

    async def start(app: web.Application) -> None:
        await app[FEED].start()

    async def stop(app: web.Application) -> None:
        await app[FEED].close()

    from ..context import RUNTIME
    app[FEED] = ResultFeed(app[RUNTIME].store)
    app.on_startup.append(start)
    app.on_shutdown.append(stop)


# --- the inbox ------------------------------------------------------------------------------

def _scope(who: Principal) -> dict[str, Any]:
    if who.role == "clinic":
        return {"organization": who.organization}
    if who.role in ("reader", "coordinator"):
        return {"centre": who.centre_where()}
    return {}


@routes.get("/api/v1/results")
async def list_results(request: web.Request) -> web.Response:
    who = require_role(request, *VIEWERS)
    known_query(request, ("unacknowledged", "critical", "study_uid", "limit", "offset"))
    limit, offset = query_int(request, "limit", 50, 1, 500), query_int(request, "offset", 0, 0, 10**9)
    where = _scope(who)
    if query_choice(request, "unacknowledged", ("true", "false")) == "true":
        where["acknowledged_at"] = None
    elif request.query.get("unacknowledged") == "false":
        where["acknowledged_at"] = {"$ne": None}
    if (critical := query_choice(request, "critical", ("true", "false"))) is not None:
        where["critical"] = critical == "true"
    if study_uid := request.query.get("study_uid"):
        where["study_uid"] = study_uid
    store = runtime(request).store
    found = await store.find(delivery.RESULTS, where, sort=(("signed_at", -1), ("id", 1)), limit=limit, offset=offset)
    by_result: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in found}
    if found:
        for d in await store.find(delivery.DELIVERIES, {"result_id": {"$in": list(by_result)}}):
            by_result[d["result_id"]].append(d)
    items = [public_result(r, by_result[r["id"]]) for r in found]
    await record(request, "result.list", "results", organization=where.get("organization"),
                 detail={"result_ids": list(by_result)})
    return json_response(page(items, limit, offset))


@routes.get("/api/v1/results/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``result.delivered``, ``result.acknowledged``, ``critical.unacknowledged``,
    ``result.delivery_failed`` for what the caller may see; ``: heartbeat`` comments keep proxies open."""
    who = require_role(request, "clinic", "coordinator", "admin", "edge")
    known_query(request, ())

    async def send(resp: web.StreamResponse, logged: LoggedEvent) -> None:
        await _send(request, resp, who, logged)
    return await follow_log(request, request.app[FEED], PUSHED, send)


async def follow_log(request: web.Request, feed: ResultFeed, types: tuple[str, ...],
                     send: Callable[[web.StreamResponse, LoggedEvent], Awaitable[None]]) -> web.StreamResponse:
    """A Server-Sent Events stream of the event log's ``types``: what was missed since
    ``Last-Event-ID`` first (read from the store), then what ``feed`` sees, each given to ``send``
    (which writes it, or not, for this caller); ``: heartbeat`` comments keep proxies open."""
    raw_last = request.headers.get("Last-Event-ID", "").strip()
    if raw_last and not raw_last.isdigit():
        raise Problem(400, f"Last-Event-ID must be an event id from this stream, not {raw_last!r}")
    queue = feed.subscribe()  # before the replay, so nothing falls between the two
    try:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        await resp.write(b"retry: 3000\n: connected\n\n")
        sent = int(raw_last) if raw_last else 0
        if raw_last:
            store = runtime(request).store
            while True:
                missed = await store.read_log(sent, limit=500, types=types)
                for logged in missed:
                    await send(resp, logged)
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
            if logged.seq <= sent:
                continue
            await send(resp, logged)
            sent = logged.seq
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.subscribers.discard(queue)
    return resp


async def _send(request: web.Request, resp: web.StreamResponse, who: Principal, logged: LoggedEvent) -> None:
    event: Event = logged.event
    if not sees(who, event.data):
        return
    # A pushed summary names the patient: it is a read of the result.
    await record(request, "result.push", f"result/{event.data['result_id']}",
                 organization=event.data.get("organization"), detail={"event": event.type, "seq": logged.seq})
    body = json.dumps({"type": event.type, "id": event.id, "time": event.time, "subject": event.subject,
                       "data": event.data}, ensure_ascii=False, separators=(",", ":"))
    await resp.write(f"id: {logged.seq}\nevent: {event.type}\ndata: {body}\n\n".encode())


async def _visible_result(request: web.Request, who: Principal, result_id: str, action: str) -> dict[str, Any]:
    doc = await runtime(request).store.get(delivery.RESULTS, result_id)
    if doc is None or not sees(who, doc):
        raise await not_found(request, action, f"result/{result_id}", f"result {result_id!r}")
    return doc


@routes.get("/api/v1/results/{result_id}")
async def get_result(request: web.Request) -> web.Response:
    who = require_role(request, *VIEWERS)
    result_id = request.match_info["result_id"]
    doc = await _visible_result(request, who, result_id, "result.read")
    deliveries = await runtime(request).store.find(delivery.DELIVERIES, {"result_id": result_id})
    await record(request, "result.read", f"result/{result_id}", organization=doc["organization"])
    return json_response(public_result(doc, deliveries))


@routes.get("/api/v1/results/{result_id}/pdf")
async def result_pdf(request: web.Request) -> web.Response:
    """The report as it is printed: the signed PDF the clinic's terminal got (the very bytes the
    SR names and the verification checks), for the desk's 打印 print."""
    who = require_role(request, *VIEWERS)
    result_id = request.match_info["result_id"]
    doc = await _visible_result(request, who, result_id, "result.pdf")
    kept = await runtime(request).store.get(delivery.SIGNED_PDFS, result_id)
    if kept is None:
        await record(request, "result.pdf", f"result/{result_id}", organization=doc["organization"],
                     outcome="not_found")
        raise Problem(404, f"result {result_id!r} has no signed PDF yet: it is made at the first DICOM delivery "
                           "of the report to the clinic's terminal")
    await record(request, "result.pdf", f"result/{result_id}", organization=doc["organization"],
                 detail={"sha256": kept.get("sha256")})
    return web.Response(body=base64.b64decode(kept["pdf"]), content_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{result_id}.pdf"', "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff"})


@routes.post("/api/v1/results/{result_id}/acknowledge")
async def acknowledge(request: web.Request) -> web.Response:
    who = require_role(request, *VIEWERS)
    result_id = request.match_info["result_id"]
    await _visible_result(request, who, result_id, "result.acknowledge")
    if who.role != "clinic":
        await record(request, "result.acknowledge", f"result/{result_id}", outcome="forbidden")
        raise Problem(403, "only a person at the clinic acknowledges its results")
    body = await json_body(request)
    rt = runtime(request)
    try:
        doc = await delivery.acknowledge(rt, result_id, actor=who.user_id, role=who.role, remote=remote(request),
                                         note=body.get("note"))
    except delivery.Conflict as exc:
        raise Problem(409, str(exc)) from None
    deliveries = await rt.store.find(delivery.DELIVERIES, {"result_id": result_id})
    return json_response(public_result(doc, deliveries))


# --- dead letters ----------------------------------------------------------------------------

@routes.get("/api/v1/deliveries/dead-letters")
async def dead_letters(request: web.Request) -> web.Response:
    who = require_role(request, "coordinator", "admin")
    known_query(request, ("channel", "organization", "limit", "offset"))
    limit, offset = query_int(request, "limit", 50, 1, 500), query_int(request, "offset", 0, 0, 10**9)
    where: dict[str, Any] = {"state": "dead"}
    if who.role == "coordinator":
        where["centre"] = who.centre_where()
    if channel := query_choice(request, "channel", ("dicom", "webhook", "inbox", "document", "edge")):
        where["channel"] = channel
    if organization := request.query.get("organization"):
        where["organization"] = organization
    items = await runtime(request).store.find(delivery.DELIVERIES, where, sort=(("dead_at", -1), ("id", 1)),
                                              limit=limit, offset=offset)
    await record(request, "delivery.dead_letters", "deliveries", detail={"delivery_ids": [d["id"] for d in items]})
    return json_response(page([public_delivery(d) for d in items], limit, offset))


@routes.post("/api/v1/deliveries/{delivery_id}/redrive")
async def redrive(request: web.Request) -> web.Response:
    who = require_role(request, "coordinator", "admin")
    delivery_id = request.match_info["delivery_id"]
    rt = runtime(request)
    d = await rt.store.get(delivery.DELIVERIES, delivery_id)
    if d is None or not (who.role == "admin" or who.reads_for(d.get("centre"))):
        raise await not_found(request, "delivery.redrive", f"delivery/{delivery_id}", f"delivery {delivery_id!r}")
    await json_body(request)
    try:
        done = await delivery.redrive(rt, delivery_id, actor=who.user_id, role=who.role, remote=remote(request))
    except delivery.Conflict as exc:
        raise Problem(409, str(exc)) from None
    return json_response(public_delivery(done))
