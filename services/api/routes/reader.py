"""Reader and coordinator views: the worklist, study metadata and priors, the centre's queues."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core.consortium import KINDS, PRIORITIES
from ...workflow import queries
from ...workflow.model import OPEN_STATES
from ..context import not_found, page, principal, record, require_role, runtime
from ..problems import Problem, json_response
from ..scope import sees_study, shown, visible_priors
from ..validation import known_query, query_choice, query_int

routes = web.RouteTableDef()

PRIOR_REPORT_FIELDS = ("id", "kind", "modality", "centre", "reader_name", "signed_at", "findings", "impression",
                       "critical", "critical_category", "addendum_of")

# What a worklist row shows; the whole request (history, draft) is GET /reading-requests/{id}.
# Keeping rows small keeps the busiest endpoint fast (JSON encoding dominates its cost).
WORKLIST_FIELDS = ("id", "study_uid", "organization", "centre", "kind", "modality", "priority", "green_channel",
                   "signed_resident", "state", "requested_at", "queued_at", "deadline", "sla_at_risk",
                   "claimed_by", "claimed_by_name", "lease_expires_at", "patient_id", "patient_name",
                   "accession_number", "study_description", "clinical_question", "escalated_from", "source",
                   "demographic_mismatches",  # order and study disagree on the patient (四个一致): shown on the row
                   "pending_addendum")  # a junior's addendum waiting for review (the request stays signed)


@routes.get("/api/v1/worklist")
async def worklist(request: web.Request) -> web.Response:
    who = require_role(request, "reader", "coordinator")
    known_query(request, ("centre", "kind", "modality", "priority", "origin", "limit", "offset"))
    limit, offset = query_int(request, "limit", 50, 1, 500), query_int(request, "offset", 0, 0, 10**9)
    filters = {"kind": query_choice(request, "kind", KINDS), "modality": query_choice(request, "modality"),
               "priority": query_choice(request, "priority", PRIORITIES), "origin": query_choice(request, "origin")}
    # A reader of several centres gets one list of all of them, or one centre's with ?centre=.
    wanted = query_choice(request, "centre")
    if wanted is not None and not who.reads_for(wanted):
        raise Problem(403, f"you read for {', '.join(who.centre_ids)}, not {wanted}")
    centre = wanted or who.centre_where()
    tasks = await queries.worklist(runtime(request).store, centre=centre, **filters, limit=limit, offset=offset)
    items = [{k: t.get(k) for k in WORKLIST_FIELDS} for t in tasks]
    await record(request, "worklist.read", f"centre/{wanted or ','.join(who.centre_ids)}/worklist",
                 detail={"filters": {k: v for k, v in filters.items() if v}, "request_ids": [r["id"] for r in items]})
    return json_response(page(items, limit, offset))


async def _study(request: web.Request, action: str) -> dict[str, Any]:
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    uid = request.match_info["study_uid"]
    store = runtime(request).store
    study = await store.get("studies", uid)
    if study is None or not await sees_study(store, who, study):
        raise await not_found(request, action, f"study/{uid}", f"study {uid!r}")
    return study


@routes.get("/api/v1/studies/{study_uid}")
async def study_metadata(request: web.Request) -> web.Response:
    study = await _study(request, "study.read")
    store = runtime(request).store
    series = await store.find("series", {"study_uid": study["id"]}, sort=(("series_number", 1), ("id", 1)))
    instances = await store.find("instances", {"study_uid": study["id"]},
                                 sort=(("series_uid", 1), ("instance_number", 1), ("id", 1)))
    await record(request, "study.read", f"study/{study['id']}", organization=study.get("organization"))
    return json_response({**shown(study, principal(request)), "series": series, "instances": instances})


@routes.get("/api/v1/studies/{study_uid}/priors")
async def priors(request: web.Request) -> web.Response:
    study = await _study(request, "study.priors")
    store = runtime(request).store
    priors = await visible_priors(store, principal(request), study)
    for prior in priors:  # 结果互认: the prior's signed results travel with it
        prior["reports"] = [{k: r.get(k) for k in PRIOR_REPORT_FIELDS}
                            for r in await queries.reports_of_study(store, prior["id"])]
    await record(request, "study.priors", f"study/{study['id']}", organization=study.get("organization"),
                 detail={"prior_uids": [p["id"] for p in priors],
                         "organizations": sorted({p.get("organization") or "" for p in priors})})
    return json_response({"items": [shown(p, principal(request)) for p in priors]})




@routes.get("/api/v1/queues")
async def queues(request: web.Request) -> web.Response:
    """Depth, oldest waiting and the tasks of every open state, per centre."""
    who = require_role(request, "coordinator", "admin")
    known_query(request, ("centre",))
    rt = runtime(request)
    wanted = request.query.get("centre")
    if who.role == "coordinator":
        if wanted and not who.reads_for(wanted):
            raise Problem(403, f"a coordinator sees only his own centres' queues ({', '.join(who.centre_ids)})")
        centres = [wanted] if wanted else list(who.centre_ids)
    elif wanted:
        if wanted not in rt.consortium.centres:
            raise Problem(404, f"no centre {wanted!r}")
        centres = [wanted]
    else:
        centres = list(rt.consortium.centres)
    out: dict[str, Any] = {}
    for centre in centres:
        tasks = await queries.worklist(rt.store, centre=centre, state=OPEN_STATES, limit=500)
        by_state: dict[str, Any] = {}
        for state in OPEN_STATES:
            of_state = [t for t in tasks if t["state"] == state]
            depth = await rt.store.count("reading_requests", {"centre": centre, "state": state})
            first = await rt.store.find("reading_requests", {"centre": centre, "state": state},
                                        sort=(("requested_at", 1),), limit=1)
            oldest = first[0].get("requested_at") if first else None
            by_state[state] = {"depth": depth, "oldest_requested_at": oldest, "items": of_state}
        out[centre] = by_state
    await record(request, "queue.read", "queues", detail={"centres": centres})
    return json_response({"centres": out})
