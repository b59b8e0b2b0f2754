"""The centre's side of an edge's worklist copy (docs/edge.md): the edge reads its organisation's
open orders so that its modalities can query the worklist while the link is down, and reports the
MPPS its modalities sent it meanwhile, so that the centre's orders move as if they had been sent here.

Role ``edge`` only, for its own organisation only; a read of the worklist is a read of patient data
(names, IDs, the resident ID the modality needs whole) and is audited as such.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from ...pacs_gateway import worklist as mwl
from ...workflow.orders.model import OPEN_STATES
from ...workflow.orders.service import ORDERS
from ..context import record, require_role, runtime
from ..problems import Problem, json_response
from ..validation import json_body, known_query, query_instant, query_int

routes = web.RouteTableDef()

# What the edge's worklist (services/pacs_gateway/worklist.py, order_record and find) reads of an order,
# and what its forward queue ranks by; nothing else of the order leaves the centre.
FIELDS = ("id", "organization", "state", "on_worklist", "patient_name", "patient_id", "birth_date", "sex",
          "resident_id", "accession_number", "study_instance_uid", "requested_procedure_id", "scheduled_step_id",
          "procedure_code", "procedure_description", "priority", "green_channel", "requesting_physician",
          "requesting_department", "clinical_question", "body_part", "station_ae", "modality", "scheduled_at",
          "scheduled_date", "scheduled_time", "updated_at")
# A closed order only tells the edge to drop its copy: no patient data.
CLOSED_FIELDS = ("id", "organization", "state", "on_worklist", "accession_number", "updated_at")
# A change committed a little after a later one (its command started first) is still seen: a ``since``
# query looks this far back.  Upserts at the edge make the overlap harmless.
OVERLAP = timedelta(seconds=120)


def _before(since: str) -> str:
    when = datetime.fromisoformat(since.replace("Z", "+00:00")) - OVERLAP
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@routes.get("/api/v1/edge/worklist")
async def worklist(request: web.Request) -> web.Response:
    """Without ``since``: every open order of the edge's organisation (the whole copy).  With ``since``
    (a previous answer's ``cursor``): every order changed since, closed ones included (their ids and
    state only), so that the edge drops what was completed or cancelled here."""
    who = require_role(request, "edge")
    known_query(request, ("since", "limit", "offset"))
    limit, offset = query_int(request, "limit", 500, 1, 1000), query_int(request, "offset", 0, 0, 10**9)
    since = query_instant(request, "since")
    where: dict[str, Any] = {"organization": who.organization}
    if since is None:
        where["state"] = {"$in": list(OPEN_STATES)}
    else:
        where["updated_at"] = {"$gte": _before(since)}
    rt = runtime(request)
    docs = await rt.store.find(ORDERS, where, sort=(("updated_at", 1), ("id", 1)), limit=limit, offset=offset)
    items = [{k: d.get(k) for k in (FIELDS if d["state"] in OPEN_STATES else CLOSED_FIELDS)} for d in docs]
    cursor = max([since or "", *(d["updated_at"] or "" for d in items)]) or None
    if items:  # an empty answer discloses nothing; an edge asks every minute
        await record(request, "edge.worklist", "orders", organization=who.organization,
                     detail={"order_ids": [d["id"] for d in items], "since": since})
    return json_response({"items": items, "complete": since is None, "cursor": cursor, "limit": limit,
                          "offset": offset, "next_offset": offset + limit if len(items) == limit else None})


@routes.post("/api/v1/edge/procedure-steps")
async def procedure_step(request: web.Request) -> web.Response:
    """An MPPS status a modality of the edge's organisation reported at the edge (PS3.4 F); the centre
    keeps it and emits ``procedure_step.reported`` as its own gateway would.  A status already held is
    a no-op (the edge resends after a cut connection)."""
    who = require_role(request, "edge")
    body = await json_body(request)
    rt = runtime(request)
    org = rt.consortium.organizations[who.organization]
    if body["calling_ae"] not in org.modality_aes:
        raise Problem(422, f"calling_ae {body['calling_ae']!r} is not a modality AE title of {who.organization}")
    uid = body["sop_instance_uid"]
    try:
        outcome = await mwl.forwarded_step(rt, body, who.organization)
    except mwl.StepRefused as exc:
        await record(request, "edge.procedure_step", f"procedure-step/{uid}", organization=who.organization,
                     outcome="refused", detail={"status": body["status"], "reason": exc.comment})
        raise Problem(409, f"MPPS {uid}: {exc.comment}") from None
    await record(request, "edge.procedure_step", f"procedure-step/{uid}", organization=who.organization,
                 detail={"status": body["status"], "outcome": outcome})
    return json_response({"sop_instance_uid": uid, "status": body["status"], "outcome": outcome})
