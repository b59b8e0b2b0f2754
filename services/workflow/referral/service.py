"""Command handlers of two-way referral (双向转诊).

:func:`execute` checks the caller's role and scope and applies the command in ONE store
transaction: the referral (compare-and-set on ``version``), the reserved slot (a conditional
update: of concurrent bookings of one slot exactly one wins), the ``referral.*`` event(s) and the
audit record.  A refused command raises a :class:`~services.workflow.errors.WorkflowError` and
changes nothing.

Sides (docs/referral.md, "Who does what"): the *referring* side is the clinic that raised it (for
a down-referral the hospital department); the *receiving* side the target organisation's users
of the target department (any clinic user of a township for a down-referral); the coordinators
of either organisation supervise; an admin sees all.
"""

from __future__ import annotations

import re
import uuid
from datetime import date as Date, datetime
from typing import Any

from ...core.auth import Principal
from ...core.events import Event, new_traceparent
from ...core.localtime import zone
from ...core.runtime import Runtime
from ..context import CommandContext, settings_of
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..leases import iso
from ..values import text as _text
from ..values import timestamp as _time
from . import commands as c
from . import model

REFERRALS = "referrals"
SLOTS = "referral_slots"
STUDY_LINKS = "referral_studies"
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_STUDIES = 50
MAX_SLOTS = 200

Doc = dict[str, Any]


def department_of(rt: Runtime, actor: Principal) -> str | None:
    user = rt.consortium.users.get(actor.user_id)
    return user.department if user else None


def side(rt: Runtime, actor: Principal, doc: Doc) -> str | None:
    """``referring``, ``receiving``, ``coordinator``, ``admin`` or None (may not see it)."""
    if actor.role == "admin":
        return "admin"
    if actor.role == "clinic":
        dept = department_of(rt, actor)
        if actor.organization == doc.get("target_organization") and (
                doc.get("target_department") is None or dept in (None, doc["target_department"])):
            return "receiving"
        if actor.organization == doc.get("organization") and (
                doc.get("origin_department") is None or dept in (None, doc["origin_department"])):
            return "referring"
        return None
    if actor.role == "coordinator" and actor.organization in (doc.get("organization"), doc.get("target_organization")):
        return "coordinator"
    return None


# action -> the sides that may do it
SIDES_FOR: dict[str, tuple[str, ...]] = {
    "book": ("referring", "receiving", "coordinator", "admin"),
    "accept": ("receiving", "coordinator", "admin"),
    "refuse": ("receiving", "coordinator", "admin"),
    "cancel": ("referring", "admin"),
    "arrive": ("receiving", "coordinator", "admin"),
    "complete": ("receiving", "coordinator", "admin"),
    "confirm_follow_up": ("receiving", "admin"),
    "refer_down": ("receiving", "admin"),
}


class _Ctx(CommandContext):
    """A referral command's context: events and audit records about one referral."""

    def event(self, type: str, doc: Doc, **data: Any) -> Event:
        # ``at``: the command's time (the workflow clock), what the figures measure with
        return self.emit(f"referral.{type}", doc["id"], {**summary(doc), "actor": self.actor.user_id, "at": self.at,
                                                         **data})

    async def audit(self, action: str, doc: Doc, **detail: Any) -> None:
        await self.record(f"referral.{action}", f"referral/{doc['id']}", doc["organization"], **detail)


def summary(doc: Doc) -> Doc:
    """What every ``referral.*`` event carries: enough for the trace and the figures."""
    return {k: doc.get(k) for k in ("direction", "organization", "target_organization", "target_department",
                                    "state", "urgency", "green_channel", "requested_at", "patient_id",
                                    "patient_name", "parent_id", "family_doctor")} | {"referral_id": doc["id"]}


async def execute(rt: Runtime, command: c.Command, *, actor: Principal, remote: str | None = None) -> Doc:
    """Apply ``command`` as ``actor``; return the referral (the published slots for PublishSlots)."""
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise Invalid(f"unknown referral command {type(command).__name__}")
    async with rt.store.transaction() as tx:
        ctx = _Ctx(rt, tx, actor, remote, settings_of(rt).now(), new_traceparent())
        return await handler(ctx, command)


# --- helpers ----------------------------------------------------------------------------------

async def _visible(ctx: _Ctx, referral_id: str, action: str) -> Doc:
    doc = await ctx.tx.get(REFERRALS, referral_id) if isinstance(referral_id, str) else None
    who = side(ctx.rt, ctx.actor, doc) if doc else None
    if who is None:
        raise NotFound(f"no referral {referral_id!r}")
    if who not in SIDES_FOR[action]:
        raise Forbidden(f"the {who} side may not {action.replace('_', ' ')} this referral")
    model.require(doc, action)
    return doc


async def _apply(ctx: _Ctx, doc: Doc, action: str, changes: Doc | None = None) -> Doc:
    update = model.transition(doc, action, at=ctx.at, by=ctx.actor.user_id, changes=changes)
    if not await ctx.tx.update(REFERRALS, doc["id"], update, where={"version": doc.get("version", 0)}):
        raise Conflict(f"referral {doc['id']} changed concurrently; reload and try again")
    return {**doc, **update}


def _slot_view(slot: Doc) -> Doc:
    return {k: slot.get(k) for k in ("id", "organization", "department", "kind", "start", "end", "release_at")}


async def _book(ctx: _Ctx, doc: Doc, slot_id: Any, *, green_channel: bool = False) -> Doc:
    """Take ``slot_id`` for ``doc``: a conditional update on the slot's ``state``, so of concurrent
    bookings of one slot exactly one wins (the others are 409 naming the winner)."""
    slot = await ctx.tx.get(SLOTS, slot_id) if isinstance(slot_id, str) else None
    if slot is None or slot["organization"] != doc["target_organization"] or \
            slot["department"] != doc["target_department"]:
        raise NotFound(f"no reserved slot {slot_id!r} of {doc['target_organization']} {doc['target_department']}")
    why = model.bookable(slot, ctx.at, green_channel=green_channel)
    if why:
        raise Conflict(why)
    won = await ctx.tx.update(SLOTS, slot["id"], {"state": "booked", "referral_id": doc["id"], "booked_at": ctx.at,
                                                  "released_pool": slot["state"] == "released"},
                              where={"state": slot["state"], "referral_id": None})
    if not won:
        held = await ctx.tx.get(SLOTS, slot["id"]) or {}
        raise Conflict(f"slot {slot['id']} is already booked by referral {held.get('referral_id')}")
    if doc.get("slot_id"):  # moving to another slot frees the old one
        await ctx.tx.update(SLOTS, doc["slot_id"], {"state": "reserved", "referral_id": None, "booked_at": None})
    return slot


async def _free(ctx: _Ctx, doc: Doc) -> None:
    if doc.get("slot_id"):
        await ctx.tx.update(SLOTS, doc["slot_id"], {"state": "reserved", "referral_id": None, "booked_at": None},
                            where={"referral_id": doc["id"]})


async def _link_studies(ctx: _Ctx, doc: Doc) -> None:
    """One ``referral_studies`` row per attached study: the receiving organisation's scope (api/scope.py)."""
    for uid in doc["study_uids"]:
        await ctx.tx.insert(STUDY_LINKS, {"id": f"{doc['id']}|{uid}", "referral_id": doc["id"], "study_uid": uid,
                                          "target_organization": doc["target_organization"]})


def _org_by_ref(rt: Runtime, ref: Any) -> str | None:
    """An organisation by id or by its name (a consultation opinion names the hospital)."""
    if not isinstance(ref, str):
        return None
    orgs = rt.consortium.organizations
    if ref in orgs:
        return ref
    return next((o.id for o in orgs.values() if o.name == ref.strip()), None)


# --- command handlers ----------------------------------------------------------------------------

async def _request(ctx: _Ctx, cmd: c.RequestUpReferral) -> Doc:
    if ctx.actor.role != "clinic":
        raise Forbidden(f"a {ctx.actor.role} may not raise a referral (a clinic doctor does)")
    rt, organization = ctx.rt, ctx.actor.organization
    prefill: Doc = {}
    source = None
    if cmd.from_report is not None:
        report = await ctx.tx.get("reports", cmd.from_report) if isinstance(cmd.from_report, str) else None
        if report is None or report.get("organization") != organization:
            raise NotFound(f"no report {cmd.from_report!r}")
        prefill = {"study_uids": [report["study_uid"]], "patient_id": report.get("patient_id"),
                   "patient_name": report.get("patient_name"),
                   "reason": f"{report.get('impression') or ''}".strip() or None}
        source = {"kind": "report", "id": report["id"]}
    elif cmd.from_consultation is not None:
        cons = await ctx.tx.get("consultations", cmd.from_consultation) \
            if isinstance(cmd.from_consultation, str) else None
        if cons is None or cons.get("organization") != organization:
            raise NotFound(f"no consultation {cmd.from_consultation!r}")
        rec = (cons.get("opinion") or {}).get("recommendations") or {}
        if rec.get("disposition") != "up_refer":
            raise Invalid(f"consultation {cons['id']}'s opinion does not recommend an up-referral")
        prefill = {"study_uids": cons.get("study_uids") or [], "patient_id": cons.get("patient_id"),
                   "patient_name": cons.get("patient_name"), "reason": cons["opinion"].get("assessment"),
                   "target_organization": _org_by_ref(rt, rec["referral"]["hospital"]),
                   "department": rec["referral"]["department"]}
        source = {"kind": "consultation", "id": cons["id"]}
    target = _org_by_ref(rt, cmd.target_organization) if cmd.target_organization else prefill.get("target_organization")
    if target is None:
        raise Invalid(f"target_organization {cmd.target_organization!r} is not an organisation of the consortium")
    if target not in rt.consortium.ancestors(organization)[1:]:
        raise Invalid(f"{target} is not above {organization} in the consortium: an up-referral goes to an "
                      "upper hospital")
    department = _text(cmd.department or prefill.get("department"), "department", limit=64)
    reason = _text(cmd.reason or prefill.get("reason"), "reason", limit=4000)
    if cmd.urgency not in model.URGENCIES:
        raise Invalid(f"urgency must be one of {', '.join(model.URGENCIES)}, not {cmd.urgency!r}")
    if cmd.green_channel is not None and cmd.green_channel not in model.GREEN_CHANNELS:
        raise Invalid(f"green_channel must be one of {', '.join(model.GREEN_CHANNELS)}, not {cmd.green_channel!r}")
    uids = list(dict.fromkeys([*prefill.get("study_uids", []), *(cmd.study_uids or ())]))
    if len(uids) > MAX_STUDIES:
        raise Invalid(f"at most {MAX_STUDIES} studies")
    studies = []
    for uid in uids:
        if not isinstance(uid, str) or not UID.match(uid) or len(uid) > 64:
            raise Invalid(f"study_uid {uid!r} is not a DICOM UID")
        study = await ctx.tx.get("studies", uid)
        if study is None or study.get("organization") != organization:
            raise NotFound(f"no study {uid}")
        studies.append(study)
    patient_id = _text(cmd.patient_id or prefill.get("patient_id"), "patient_id", required=False, limit=64) or None
    patient_name = _text(cmd.patient_name or prefill.get("patient_name"), "patient_name", required=False,
                         limit=200) or None
    if not patient_id and studies:
        patient_id, patient_name = studies[0].get("patient_id"), patient_name or studies[0].get("patient_name")
    if not patient_id and not patient_name:
        raise Invalid("name the patient: patient_id, patient_name, a study, a report or a consultation")
    others = {s.get("patient_id") for s in studies} - {patient_id}
    if patient_id and others:
        raise Invalid(f"attached studies belong to other patients ({', '.join(sorted(map(str, others)))})")
    reports = [r["id"] for uid in uids for r in await ctx.tx.find("reports", {"study_uid": uid}, limit=50)]
    family_doctor = _text(cmd.family_doctor, "family_doctor", required=False, limit=200) or None
    urgency = "emergency" if cmd.green_channel else cmd.urgency
    doc = {
        "id": f"rf-{uuid.uuid4().hex[:20]}", "direction": "up", "organization": organization,
        "origin_department": department_of(rt, ctx.actor), "requested_by": ctx.actor.user_id,
        "requested_at": ctx.at, "target_organization": target, "target_department": department,
        "urgency": urgency, "green_channel": cmd.green_channel, "needs_bed": bool(cmd.needs_bed),
        "patient_id": patient_id, "patient_name": patient_name,
        "identity": next((s["identity"] for s in studies if s.get("identity")), None),
        "reason": reason, "study_uids": uids, "report_ids": reports, "source": source,
        "family_doctor": family_doctor, "signed_resident": family_doctor is not None, "parent_id": None,
        "state": "requested", "slot_id": None, "slot": None, "booked_at": None, "accepted_at": None,
        "refusal": None, "cancellation": None, "arrived_at": None, "completed_at": None, "escalated_at": None,
        "no_show_at": None, "down_referral_id": None, "version": 0, "updated_at": ctx.at,
        "history": [{"action": "request", "state": "requested", "at": ctx.at, "by": ctx.actor.user_id}],
    }
    await ctx.tx.insert(REFERRALS, doc)
    await _link_studies(ctx, doc)
    ctx.event("requested", doc, reason=reason, study_uids=uids, report_ids=reports, source=source)
    await ctx.audit("request", doc, target=target, department=department, study_uids=uids, report_ids=reports,
                    urgency=urgency, green_channel=cmd.green_channel)
    if cmd.green_channel:
        doc = await _green_channel(ctx, doc)
    elif cmd.slot_id is not None:
        doc = await _do_book(ctx, doc, cmd.slot_id)
    return doc


async def _green_channel(ctx: _Ctx, doc: Doc) -> Doc:
    """绿色通道: the earliest free slot (a bed first if it needs one) at once, even one already
    released to the general pool, and an alert to the receiving department."""
    slots = await ctx.tx.find(SLOTS, {"organization": doc["target_organization"],
                                      "department": doc["target_department"],
                                      "state": {"$in": ["reserved", "released"]}, "start": {"$gt": ctx.at}},
                              sort=(("start", 1),), limit=200)
    if doc["needs_bed"]:
        slots = [s for s in slots if s["kind"] == "bed"] or slots
    choice = model.earliest(slots, ctx.at, green_channel=True)
    for slot in choice[:5]:  # a concurrent booking may take the first: try the next
        try:
            doc = await _do_book(ctx, doc, slot["id"], green_channel=True)
            break
        except Conflict:
            continue
    ctx.event("green_channel", doc, slot=doc.get("slot"), reason=doc["reason"])
    await ctx.audit("green_channel", doc, slot_id=doc.get("slot_id"))
    return doc


async def _do_book(ctx: _Ctx, doc: Doc, slot_id: Any, *, green_channel: bool = False) -> Doc:
    slot = await _book(ctx, doc, slot_id, green_channel=green_channel)
    doc = await _apply(ctx, doc, "book", {"slot_id": slot["id"], "slot": _slot_view(slot), "booked_at": ctx.at})
    ctx.event("booked", doc, slot=doc["slot"])
    await ctx.audit("book", doc, slot_id=slot["id"])
    return doc


async def _book_cmd(ctx: _Ctx, cmd: c.Book) -> Doc:
    doc = await _visible(ctx, cmd.referral_id, "book")
    return await _do_book(ctx, doc, cmd.slot_id, green_channel=bool(doc.get("green_channel")))


async def _accept(ctx: _Ctx, cmd: c.Accept) -> Doc:
    doc = await _visible(ctx, cmd.referral_id, "accept")
    note = _text(cmd.note, "note", required=False, limit=2000)
    if doc["direction"] == "up":
        if cmd.slot_id is not None and cmd.slot_id != doc.get("slot_id"):
            doc = await _do_book(ctx, doc, cmd.slot_id, green_channel=bool(doc.get("green_channel")))
        if not doc.get("slot_id"):
            raise Invalid("accepting an up-referral needs a booked slot: give slot_id (GET /api/v1/referral-slots)")
    doc = await _apply(ctx, doc, "accept", {"accepted_at": ctx.at, "accepted_by": ctx.actor.user_id,
                                            "acceptance_note": note})
    ctx.event("accepted", doc, slot=doc.get("slot"), note=note)
    await ctx.audit("accept", doc, slot_id=doc.get("slot_id"))
    return doc


async def _refuse(ctx: _Ctx, cmd: c.Refuse) -> Doc:
    doc = await _visible(ctx, cmd.referral_id, "refuse")
    reason = _text(cmd.reason, "reason", limit=2000)
    await _free(ctx, doc)
    doc = await _apply(ctx, doc, "refuse", {"refusal": {"reason": reason, "by": ctx.actor.user_id, "at": ctx.at},
                                            "slot_id": None, "slot": None})
    ctx.event("refused", doc, reason=reason)
    await ctx.audit("refuse", doc, reason=reason)
    return doc


async def _cancel(ctx: _Ctx, cmd: c.Cancel) -> Doc:
    doc = await _visible(ctx, cmd.referral_id, "cancel")
    reason = _text(cmd.reason, "reason", limit=2000)
    await _free(ctx, doc)
    doc = await _apply(ctx, doc, "cancel", {"cancellation": {"reason": reason, "by": ctx.actor.user_id,
                                                             "at": ctx.at}, "slot_id": None, "slot": None})
    ctx.event("cancelled", doc, reason=reason)
    await ctx.audit("cancel", doc, reason=reason)
    return doc


async def _arrive(ctx: _Ctx, cmd: c.Arrive) -> Doc:
    doc = await _visible(ctx, cmd.referral_id, "arrive")
    if doc.get("slot_id"):
        await ctx.tx.update(SLOTS, doc["slot_id"], {"state": "used"}, where={"referral_id": doc["id"]})
    doc = await _apply(ctx, doc, "arrive", {"arrived_at": ctx.at})
    ctx.event("arrived", doc, slot=doc.get("slot"), arrived_at=ctx.at)
    await ctx.audit("arrive", doc)
    return doc


async def _complete(ctx: _Ctx, cmd: c.Complete) -> Doc:
    doc = await _visible(ctx, cmd.referral_id, "complete")
    text = _text(cmd.summary, "summary", required=False, limit=4000)
    doc = await _apply(ctx, doc, "complete", {"completed_at": ctx.at, "encounter_summary": text or None})
    ctx.event("completed", doc, summary=text or None)
    await ctx.audit("complete", doc)
    return doc


async def _refer_down(ctx: _Ctx, cmd: c.ReferDown) -> Doc:
    up = await _visible(ctx, cmd.referral_id, "refer_down")
    if up.get("down_referral_id"):
        raise Conflict(f"referral {up['id']} was already referred down ({up['down_referral_id']})")
    diagnosis = _text(cmd.diagnosis, "diagnosis", limit=2000)
    treatment = _text(cmd.treatment_summary, "treatment_summary", limit=8000)
    plan = model.plan(cmd.plan)
    target = _org_by_ref(ctx.rt, cmd.target_organization) if cmd.target_organization else up["organization"]
    if target is None or up["target_organization"] not in ctx.rt.consortium.ancestors(target)[1:]:
        raise Invalid(f"target_organization {cmd.target_organization!r} is not below {up['target_organization']}")
    family_doctor = _text(cmd.family_doctor, "family_doctor", required=False, limit=200) or up.get("family_doctor")
    if not family_doctor:
        raise Invalid("a down-referral names the family doctor who takes over (family_doctor)")
    doc = {
        "id": f"rf-{uuid.uuid4().hex[:20]}", "direction": "down", "organization": up["target_organization"],
        "origin_department": up["target_department"], "requested_by": ctx.actor.user_id, "requested_at": ctx.at,
        "target_organization": target, "target_department": None, "urgency": "routine", "green_channel": None,
        "needs_bed": False, "patient_id": up["patient_id"], "patient_name": up["patient_name"],
        "identity": up.get("identity"), "reason": diagnosis, "diagnosis": diagnosis,
        "treatment_summary": treatment, "plan": plan, "study_uids": up["study_uids"],
        "report_ids": up["report_ids"], "source": {"kind": "referral", "id": up["id"]},
        "family_doctor": family_doctor, "signed_resident": True, "parent_id": up["id"], "state": "requested",
        "slot_id": None, "slot": None, "accepted_at": None, "refusal": None, "cancellation": None,
        "first_follow_up": None, "completed_at": None, "version": 0, "updated_at": ctx.at,
        "history": [{"action": "request", "state": "requested", "at": ctx.at, "by": ctx.actor.user_id}],
    }
    await ctx.tx.insert(REFERRALS, doc)
    await _link_studies(ctx, doc)
    await _apply(ctx, up, "refer_down", {"down_referral_id": doc["id"]})
    ctx.event("requested", doc, reason=diagnosis, study_uids=doc["study_uids"], report_ids=doc["report_ids"],
              source=doc["source"], plan=plan)
    await ctx.audit("refer_down", doc, up_referral=up["id"], target=target, family_doctor=family_doctor)
    return doc


async def _confirm_follow_up(ctx: _Ctx, cmd: c.ConfirmFollowUp) -> Doc:
    doc = await _visible(ctx, cmd.referral_id, "confirm_follow_up")
    try:
        day = Date.fromisoformat(cmd.date).isoformat()
    except (TypeError, ValueError):
        raise Invalid(f"date must be a date (YYYY-MM-DD), not {cmd.date!r}") from None
    note = _text(cmd.note, "note", required=False, limit=2000)
    entry = {"date": day, "note": note or None, "by": ctx.actor.user_id, "at": ctx.at}
    doc = await _apply(ctx, doc, "confirm_follow_up", {"first_follow_up": entry, "completed_at": ctx.at})
    ctx.event("completed", doc, first_follow_up=entry)
    await ctx.audit("confirm_follow_up", doc, date=day)
    return doc


# --- reserved capacity --------------------------------------------------------------------------

def _local_time(tz: str, day: str, hhmm: Any, what: str) -> float:
    if not isinstance(hhmm, str) or not re.fullmatch(r"\d\d:\d\d", hhmm):
        raise Invalid(f"{what} must be a local time HH:MM")
    try:
        return datetime.fromisoformat(f"{day}T{hhmm}:00").replace(tzinfo=zone(tz)).timestamp()
    except ValueError:
        raise Invalid(f"{what} {hhmm!r} is not a time") from None


async def _publish(ctx: _Ctx, cmd: c.PublishSlots) -> Doc:
    rt, actor = ctx.rt, ctx.actor
    if actor.role == "admin":
        organization = _org_by_ref(rt, cmd.organization)
        if organization is None:
            raise Invalid("an admin names the organization whose slots he publishes")
    elif actor.role == "coordinator" or (actor.role == "clinic" and department_of(rt, actor)):
        organization = actor.organization
        if cmd.organization not in (None, organization):
            raise Forbidden(f"you publish slots of {organization} only")
    else:
        raise Forbidden(f"a {actor.role} without a department may not publish reserved slots")
    if rt.consortium.organizations[organization].level not in ("city", "county"):
        raise Invalid(f"{organization} is not an upper hospital: only city and county hospitals reserve slots")
    department = _text(cmd.department, "department", limit=64)
    if actor.role == "clinic" and department != department_of(rt, actor):
        raise Forbidden(f"you publish slots of {department_of(rt, actor)} only")
    if cmd.kind not in model.SLOT_KINDS:
        raise Invalid(f"kind must be one of {', '.join(model.SLOT_KINDS)}, not {cmd.kind!r}")
    windows: list[tuple[float, float, int]] = []
    if cmd.quota is not None:
        if cmd.slots:
            raise Invalid("give either slots or a quota, not both")
        if not isinstance(cmd.quota, int) or isinstance(cmd.quota, bool) or not 1 <= cmd.quota <= MAX_SLOTS:
            raise Invalid(f"quota must be an integer from 1 to {MAX_SLOTS}")
        try:
            day = Date.fromisoformat(cmd.date).isoformat()
        except (TypeError, ValueError):
            raise Invalid(f"date must be a date (YYYY-MM-DD), not {cmd.date!r}") from None
        start = _local_time(rt.consortium.timezone, day, cmd.start or "08:00", "start")
        end = _local_time(rt.consortium.timezone, day, cmd.end or "12:00", "end")
        if end <= start:
            raise Invalid("the quota's session must end after it starts")
        windows = [(start, end, n) for n in range(1, cmd.quota + 1)]
    else:
        if not cmd.slots or len(cmd.slots) > MAX_SLOTS:
            raise Invalid(f"slots must list 1 to {MAX_SLOTS} slots {{start, end}} (or give date and quota)")
        for i, s in enumerate(cmd.slots):
            if not isinstance(s, dict):
                raise Invalid(f"slots[{i}] must be an object {{start, end}}")
            start, end = _time(s.get("start"), f"slots[{i}].start"), _time(s.get("end"), f"slots[{i}].end")
            if end <= start:
                raise Invalid(f"slots[{i}] must end after it starts")
            windows.append((start, end, 1))
    published = []
    for start, end, n in windows:
        if start <= ctx.now:
            raise Invalid(f"slot {iso(start)} starts in the past")
        sid = model.slot_id(organization, department, cmd.kind, iso(start), n)
        if await ctx.tx.get(SLOTS, sid) is not None:
            raise Conflict(f"slot {sid} is already published")
        slot = {"id": sid, "organization": organization, "department": department, "kind": cmd.kind,
                "start": iso(start), "end": iso(end), "release_at": iso(start - rt.consortium.referral.release_before),
                "state": "reserved", "referral_id": None, "booked_at": None, "released_pool": False,
                "published_by": actor.user_id, "published_at": ctx.at}
        await ctx.tx.insert(SLOTS, slot)
        published.append(slot)
    ctx.emit("referral.slots_published", organization, {
        "organization": organization, "department": department, "kind": cmd.kind, "actor": actor.user_id,
        "at": ctx.at,
        "slots": [_slot_view(s) for s in published]})
    await ctx.record("referral.publish_slots", f"referral-slots/{organization}", organization,
                     department=department, kind=cmd.kind, slot_ids=[s["id"] for s in published])
    return {"items": published}


_HANDLERS = {c.RequestUpReferral: _request, c.Book: _book_cmd, c.Accept: _accept, c.Refuse: _refuse,
             c.Cancel: _cancel, c.Arrive: _arrive, c.Complete: _complete, c.ReferDown: _refer_down,
             c.ConfirmFollowUp: _confirm_follow_up, c.PublishSlots: _publish}
