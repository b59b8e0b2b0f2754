"""Remote consultation (远程会诊) endpoints: request, triage, schedule, notes, the signed opinion.

Commands go to :func:`services.workflow.consultation.service.execute` (role, scope, one
transaction with events and audit); reads are scoped the same way (``service.sees``): what
the caller may not see is 404.  See docs/consultation.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ...workflow import queries as reading_queries
from ...workflow.consultation import commands as c
from ...workflow.consultation import queries
from ...workflow.consultation.model import STATES
from ...workflow.consultation.service import execute, sees
from ..context import not_found, page, principal, record, require_role, runtime
from ..problems import json_response
from ..scope import patient_studies, shown
from ..validation import known_query, query_choice, query_int
from .commands import run_command
from .reader import PRIOR_REPORT_FIELDS

routes = web.RouteTableDef()

BASE = "/api/v1/consultations"
ROLES = ("clinic", "reader", "coordinator", "admin")


async def _run(request: web.Request, action: str, build: Callable[[dict[str, Any]], c.Command], *,
               status: int = 200) -> web.Response:
    cid = request.match_info.get("consultation_id")
    return await run_command(request, f"consultation.{action}", f"consultation/{cid}" if cid else "consultations",
                             build, roles=ROLES, status=status, executor=execute)


def _cid(request: web.Request) -> str:
    return request.match_info["consultation_id"]


async def _visible(request: web.Request, action: str) -> dict[str, Any]:
    who = require_role(request, *ROLES)
    cid = _cid(request)
    doc = await queries.get(runtime(request).store, cid)
    if doc is None or not sees(who, doc):
        raise await not_found(request, action, f"consultation/{cid}", f"consultation {cid!r}")
    return doc


@routes.post(BASE)
async def create(request: web.Request) -> web.Response:
    return await _run(request, "request", lambda b: c.RequestConsultation(
        chief_complaint=b["chief_complaint"], history=b.get("history", ""),
        current_treatment=b.get("current_treatment", ""), question=b["question"], urgency=b["urgency"],
        patient_id=b.get("patient_id"), patient_name=b.get("patient_name"),
        study_uids=tuple(b.get("study_uids", ())), specialty=b.get("specialty"), specialist=b.get("specialist"),
        preferred_windows=tuple(b.get("preferred_windows", ()))), status=201)


@routes.get(BASE)
async def list_consultations(request: web.Request) -> web.Response:
    """A clinic: its own; a reader: those he is invited to (by slot); a coordinator: his centre's."""
    who = require_role(request, *ROLES)
    known_query(request, ("state", "limit", "offset"))
    limit, offset = query_int(request, "limit", 50, 1, 500), query_int(request, "offset", 0, 0, 10**9)
    state = query_choice(request, "state", STATES)
    store = runtime(request).store
    if who.role == "reader":
        items = await queries.of_specialist(store, who.user_id, state=state, limit=limit, offset=offset)
    elif who.role == "coordinator":
        items = await queries.of_centre(store, who.centre, state=state, limit=limit, offset=offset)
    else:
        items = await queries.of_organization(store, who.organization if who.role == "clinic" else None,
                                              state=state, limit=limit, offset=offset)
    await record(request, "consultation.list", "consultations",
                 organization=who.organization if who.role == "clinic" else None,
                 detail={"consultation_ids": [d["id"] for d in items]})
    return json_response(page(items, limit, offset))


@routes.get(BASE + "/{consultation_id}")
async def get_consultation(request: web.Request) -> web.Response:
    doc = await _visible(request, "consultation.read")
    await record(request, "consultation.read", f"consultation/{doc['id']}", organization=doc["organization"])
    return json_response(doc)


@routes.get(BASE + "/{consultation_id}/case")
async def case(request: web.Request) -> web.Response:
    """The case: summary, the attached studies, and the patient's prior studies from any site
    with their signed reports (结果互认; the same-patient rule of ``api/scope.py``)."""
    doc = await _visible(request, "consultation.case")
    who = principal(request)
    store = runtime(request).store
    attached = [s for s in [await store.get("studies", uid) for uid in doc["study_uids"]] if s is not None]
    anchor = attached[0] if attached else {"id": "", "organization": doc["organization"],
                                           "patient_id": doc.get("patient_id"), "patient_name": doc.get("patient_name")}
    priors = []
    if anchor.get("patient_id") or attached:
        priors = [s for s in await patient_studies(store, anchor) if s["id"] not in doc["study_uids"]]
        if who.role == "clinic":  # a clinic sees only its own studies
            priors = [s for s in priors if s.get("organization") == who.organization]
    for study in (*attached, *priors):
        study["reports"] = [{k: r.get(k) for k in PRIOR_REPORT_FIELDS}
                            for r in await reading_queries.reports_of_study(store, study["id"])]
    await record(request, "consultation.case", f"consultation/{doc['id']}", organization=doc["organization"],
                 detail={"study_uids": doc["study_uids"], "prior_uids": [p["id"] for p in priors],
                         "organizations": sorted({p.get("organization") or "" for p in priors})})
    keys = ("id", "state", "organization", "patient_id", "patient_name", "case_summary", "urgency", "specialty",
            "slot_start", "slot_end", "meeting_url", "specialists", "lead")
    return json_response({**{k: doc.get(k) for k in keys}, "studies": [shown(s, who) for s in attached],
                          "priors": [shown(p, who) for p in priors]})


@routes.post(BASE + "/{consultation_id}/withdraw")
async def withdraw(request: web.Request) -> web.Response:
    cid = _cid(request)
    return await _run(request, "withdraw", lambda b: c.Withdraw(cid, b["reason"]))


@routes.post(BASE + "/{consultation_id}/triage")
async def triage(request: web.Request) -> web.Response:
    cid = _cid(request)
    return await _run(request, "triage", lambda b: c.Triage(cid, b.get("note", ""), b.get("specialty")))


@routes.post(BASE + "/{consultation_id}/schedule")
async def schedule(request: web.Request) -> web.Response:
    cid = _cid(request)
    return await _run(request, "schedule", lambda b: c.Schedule(
        cid, b["start"], b["end"], tuple(b["specialists"]), b.get("lead")))


@routes.post(BASE + "/{consultation_id}/reschedule")
async def reschedule(request: web.Request) -> web.Response:
    cid = _cid(request)
    return await _run(request, "reschedule", lambda b: c.Reschedule(
        cid, b["start"], b["end"], b["reason"], tuple(b.get("specialists", ())), b.get("lead")))


@routes.post(BASE + "/{consultation_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    cid = _cid(request)
    return await _run(request, "cancel", lambda b: c.Cancel(cid, b["reason"]))


@routes.post(BASE + "/{consultation_id}/start")
async def start(request: web.Request) -> web.Response:
    cid = _cid(request)
    return await _run(request, "start", lambda b: c.Start(cid))


@routes.get(BASE + "/{consultation_id}/notes")
async def notes(request: web.Request) -> web.Response:
    doc = await _visible(request, "consultation.notes")
    items = await queries.notes(runtime(request).store, doc["id"])
    await record(request, "consultation.notes", f"consultation/{doc['id']}", organization=doc["organization"])
    return json_response({"items": items})


@routes.post(BASE + "/{consultation_id}/notes")
async def add_note(request: web.Request) -> web.Response:
    cid = _cid(request)
    return await _run(request, "note", lambda b: c.AddNote(cid, b["text"]), status=201)


@routes.post(BASE + "/{consultation_id}/opinion")
async def opinion(request: web.Request) -> web.Response:
    cid = _cid(request)
    return await _run(request, "conclude", lambda b: c.Conclude(
        cid, b["assessment"], b["recommendations"], tuple(b.get("signers", ()))))
