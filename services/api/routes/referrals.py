"""Two-way referral (双向转诊) endpoints: up-referral, reserved slots, accept / refuse, arrival,
down-referral with its plan, the trace and the referral letter (转诊单) PDF.

Commands go to :func:`services.workflow.referral.service.execute` (side, one transaction with
events and audit); reads are scoped by ``service.side``: what the caller may not see is 404.
See docs/referral.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

from aiohttp import web

from ...core.localtime import LocalTime, zone
from ...delivery import referral_letter
from ...delivery.settings import DeliverySettings
from ...workflow import queries as reading_queries
from ...workflow.context import settings_of
from ...workflow.leases import iso
from ...workflow.referral import commands as c
from ...workflow.referral import queries
from ...workflow.referral.model import DIRECTIONS, SLOT_STATES, STATES, bookable
from ...workflow.referral.service import execute
from ..context import not_found, page, principal, record, require_role, runtime
from ..problems import Problem, json_response
from ..scope import shown
from ..validation import known_query, query_choice, query_int
from .commands import run_command
from .reader import PRIOR_REPORT_FIELDS

routes = web.RouteTableDef()

BASE = "/api/v1/referrals"
SLOTS = "/api/v1/referral-slots"
ROLES = ("clinic", "reader", "coordinator", "admin")  # a reader sees no referral (404), like another clinic


async def _run(request: web.Request, action: str, build: Callable[[dict[str, Any]], c.Command], *,
               status: int = 200) -> web.Response:
    rid = request.match_info.get("referral_id")
    return await run_command(request, f"referral.{action}", f"referral/{rid}" if rid else "referrals",
                             build, roles=ROLES, status=status, executor=execute)


def _rid(request: web.Request) -> str:
    return request.match_info["referral_id"]


async def _visible(request: web.Request, action: str) -> dict[str, Any]:
    who = require_role(request, *ROLES)
    rid = _rid(request)
    doc = await queries.get(runtime(request), who, rid)
    if doc is None:
        raise await not_found(request, action, f"referral/{rid}", f"referral {rid!r}")
    return doc


@routes.post(BASE)
async def create(request: web.Request) -> web.Response:
    return await _run(request, "request", lambda b: c.RequestUpReferral(
        target_organization=b.get("target_organization"), department=b.get("department"), reason=b.get("reason"),
        urgency=b.get("urgency", "routine"), patient_id=b.get("patient_id"), patient_name=b.get("patient_name"),
        study_uids=tuple(b.get("study_uids", ())), from_report=b.get("from_report"),
        from_consultation=b.get("from_consultation"), green_channel=b.get("green_channel"),
        needs_bed=b.get("needs_bed", False), family_doctor=b.get("family_doctor"), slot_id=b.get("slot_id")),
        status=201)


@routes.get(BASE)
async def list_referrals(request: web.Request) -> web.Response:
    """Referrals raised by or sent to the caller's organisation (its department's), all for an admin."""
    who = require_role(request, *ROLES)
    known_query(request, ("direction", "state", "limit", "offset"))
    limit, offset = query_int(request, "limit", 50, 1, 500), query_int(request, "offset", 0, 0, 10**9)
    items = await queries.visible(runtime(request), who, direction=query_choice(request, "direction", DIRECTIONS),
                                  state=query_choice(request, "state", STATES), limit=limit, offset=offset)
    await record(request, "referral.list", "referrals", organization=who.organization if who.role != "admin" else None,
                 detail={"referral_ids": [d["id"] for d in items]})
    return json_response(page(items, limit, offset))


@routes.get(BASE + "/{referral_id}")
async def get_referral(request: web.Request) -> web.Response:
    doc = await _visible(request, "referral.read")
    await record(request, "referral.read", f"referral/{doc['id']}", organization=doc["organization"])
    return json_response(doc)


@routes.get(BASE + "/{referral_id}/trace")
async def trace(request: web.Request) -> web.Response:
    """Every step (this referral's and its linked up / down referral's) with its time."""
    doc = await _visible(request, "referral.trace")
    steps = await queries.trace(runtime(request), doc)
    await record(request, "referral.trace", f"referral/{doc['id']}", organization=doc["organization"])
    return json_response({"referral_id": doc["id"], "state": doc["state"], "steps": steps})


async def _attachments(request: web.Request, doc: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    store = runtime(request).store
    studies = [s for s in [await store.get("studies", uid) for uid in doc["study_uids"]] if s is not None]
    reports = [r for uid in doc["study_uids"] for r in await reading_queries.reports_of_study(store, uid)]
    return studies, reports


@routes.get(BASE + "/{referral_id}/case")
async def case(request: web.Request) -> web.Response:
    """What goes with the patient: the attached studies and their signed reports (the receiving
    department sees them through this referral, audited)."""
    doc = await _visible(request, "referral.case")
    who = principal(request)
    studies, reports = await _attachments(request, doc)
    await record(request, "referral.case", f"referral/{doc['id']}", organization=doc["organization"],
                 detail={"study_uids": [s["id"] for s in studies], "report_ids": [r["id"] for r in reports],
                         "organizations": sorted({s.get("organization") or "" for s in studies})})
    keys = ("id", "direction", "state", "organization", "target_organization", "target_department", "patient_id",
            "patient_name", "reason", "urgency", "green_channel", "family_doctor", "slot", "diagnosis",
            "treatment_summary", "plan")
    return json_response({**{k: doc.get(k) for k in keys}, "studies": [shown(s, who) for s in studies],
                          "reports": [{**{k: r.get(k) for k in PRIOR_REPORT_FIELDS}, "study_uid": r.get("study_uid")}
                                      for r in reports]})


@routes.get(BASE + "/{referral_id}/letter.pdf")
async def letter(request: web.Request) -> web.Response:
    """The referral letter (转诊单) in the report document's style."""
    doc = await _visible(request, "referral.letter")
    rt = runtime(request)
    studies, reports = await _attachments(request, doc)
    names = {o.id: o.name for o in rt.consortium.organizations.values()}
    font = DeliverySettings.from_env().font
    pdf = await asyncio.get_running_loop().run_in_executor(None, lambda: referral_letter.render(
        doc, names=names, consortium=rt.consortium.name, studies=studies, reports=reports, font=font,
        local=LocalTime.named(rt.consortium.timezone)))
    await record(request, "referral.letter", f"referral/{doc['id']}", organization=doc["organization"],
                 detail={"study_uids": doc["study_uids"]})
    return web.Response(body=pdf, content_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="{doc["id"]}.pdf"'})


def _command(path: str, action: str, build: Callable[[str, dict[str, Any]], c.Command], status: int = 200) -> None:
    async def handler(request: web.Request) -> web.Response:
        rid = _rid(request)
        return await _run(request, action, lambda b: build(rid, b), status=status)
    handler.__name__ = action
    routes.post(BASE + "/{referral_id}/" + path)(handler)


_command("book", "book", lambda rid, b: c.Book(rid, b["slot_id"]))
_command("accept", "accept", lambda rid, b: c.Accept(rid, b.get("slot_id"), b.get("note", "")))
_command("refuse", "refuse", lambda rid, b: c.Refuse(rid, b["reason"]))
_command("cancel", "cancel", lambda rid, b: c.Cancel(rid, b["reason"]))
_command("arrive", "arrive", lambda rid, b: c.Arrive(rid))
_command("complete", "complete", lambda rid, b: c.Complete(rid, b.get("summary", "")))
_command("refer-down", "refer_down", lambda rid, b: c.ReferDown(
    rid, b["diagnosis"], b["treatment_summary"], b["plan"], b.get("family_doctor"), b.get("target_organization")),
    status=201)
_command("follow-up", "confirm_follow_up", lambda rid, b: c.ConfirmFollowUp(rid, b["date"], b.get("note", "")))


# --- reserved capacity --------------------------------------------------------------------------

@routes.get(SLOTS)
async def list_slots(request: web.Request) -> web.Response:
    """The slots upper hospitals reserve for referrals; ``available``: a referral may book it now."""
    require_role(request, *ROLES)
    known_query(request, ("organization", "department", "date", "state", "limit"))
    day = request.query.get("date")
    day_from = day_to = None
    if day is not None:
        try:
            first = date.fromisoformat(day)
        except ValueError:
            raise Problem(422, f"date must be a date (YYYY-MM-DD), not {day!r}") from None
        # the local day (the consortium's zone), as UTC bounds
        tz = zone(runtime(request).consortium.timezone)
        day_from = iso(datetime.combine(first, time(0), tz).timestamp())
        day_to = iso(datetime.combine(first + timedelta(days=1), time(0), tz).timestamp())
    rt = runtime(request)
    items = await queries.slots(rt, organization=request.query.get("organization"),
                                department=request.query.get("department"), day_from=day_from, day_to=day_to,
                                state=query_choice(request, "state", SLOT_STATES),
                                limit=query_int(request, "limit", 200, 1, 1000))
    now = iso(settings_of(rt).now())
    return json_response({"items": [{**s, "available": bookable(s, now) is None} for s in items]})


@routes.post(SLOTS)
async def publish_slots(request: web.Request) -> web.Response:
    return await run_command(request, "referral.publish_slots", "referral-slots", lambda b: c.PublishSlots(
        department=b["department"], kind=b.get("kind", "outpatient"), slots=tuple(b.get("slots", ())),
        date=b.get("date"), quota=b.get("quota"), start=b.get("start"), end=b.get("end"),
        organization=b.get("organization")), roles=ROLES, status=201, executor=execute)
