"""The centre's side of township edges (前置机): an edge says a study is complete, reports its
heartbeat and backlog; coordinators see every edge and which went silent (docs/edge.md)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ...core import held_studies
from ...core.events import utc_now
from ..context import record, require_role, runtime
from ..problems import Problem, json_response
from ..validation import json_body

routes = web.RouteTableDef()

HEARTBEATS = "edge_heartbeats"
BACKLOG_FIELDS = ("backlog_studies", "backlog_instances", "bytes_pending", "rate_bytes_per_second")


def silent_after() -> float:
    """Seconds without a heartbeat after which an edge is shown silent (red)."""
    raw = os.environ.get("YILIAN_EDGE_SILENT_SECONDS") or "120"
    try:
        return max(1.0, float(raw))
    except ValueError:
        raise SystemExit(f"YILIAN_EDGE_SILENT_SECONDS must be a number of seconds, got {raw!r}") from None


@routes.post("/api/v1/edge/studies/{study_uid}/complete")
async def complete(request: web.Request) -> web.Response:
    """Every instance of the study is held here: announce it (``study.received``) after the quiet period."""
    who = require_role(request, "edge")
    uid = request.match_info["study_uid"]
    body = await json_body(request)
    count = body.get("instances")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise Problem(422, "instances must be the number of instances the edge sent (an integer ≥ 1)")
    rt = runtime(request)
    study = await rt.store.get("studies", uid)
    if study is None or study.get("organization") != who.organization:
        await record(request, "edge.complete", f"study/{uid}", outcome="not_found")
        raise Problem(404, f"no study {uid!r} of {who.organization} here")
    held = study.get("instance_count", 0)
    if held < count:
        raise Problem(409, f"the centre holds {held} of the {count} instances; send the rest first")
    await held_studies.release(rt.store, uid, instances=count, at=utc_now())
    await record(request, "edge.complete", f"study/{uid}", organization=who.organization,
                 detail={"instances": count})
    return json_response({"study_uid": uid, "instances": held, "state": study.get("state")})


@routes.post("/api/v1/edge/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    who = require_role(request, "edge")
    body = await json_body(request)
    doc: dict[str, Any] = {"id": who.user_id, "organization": who.organization, "received_at": utc_now()}
    for name in BACKLOG_FIELDS:
        value = body.get(name, 0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise Problem(422, f"{name} must be a number ≥ 0")
        doc[name] = value
    for name in ("last_success_at", "last_error", "version"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise Problem(422, f"{name} must be a string")
        doc[name] = value[:500] if isinstance(value, str) else None
    async with runtime(request).store.transaction() as tx:
        await tx.put(HEARTBEATS, doc)
    return json_response({"received_at": doc["received_at"], "silent_after_seconds": silent_after()})


@routes.get("/api/v1/edges")
async def edges(request: web.Request) -> web.Response:
    """Every edge's last heartbeat and backlog; ``silent`` when none came for YILIAN_EDGE_SILENT_SECONDS.

    Not audited, like the monitor's aggregates: the dashboard polls it all day and it names no patient."""
    require_role(request, "coordinator", "admin")
    rt = runtime(request)
    now = datetime.now(UTC)
    limit = silent_after()
    items = []
    for doc in await rt.store.find(HEARTBEATS, sort=[("organization", 1), ("id", 1)]):
        seen = datetime.fromisoformat(doc["received_at"].replace("Z", "+00:00"))
        age = (now - seen).total_seconds()
        org = rt.consortium.organizations.get(doc.get("organization") or "")
        user = rt.consortium.users.get(doc["id"])
        items.append({**{k: v for k, v in doc.items() if k != "id"}, "edge": doc["id"],
                      "organization_name": org.name if org else None, "edge_name": user.name if user else None,
                      "seconds_since_heartbeat": round(age, 1), "silent": age > limit})
    return json_response({"items": items, "silent_after_seconds": limit})
