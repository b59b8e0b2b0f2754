"""Command handlers of remote consultation.

:func:`execute` checks the caller's role and scope and applies the command in ONE store
transaction: the consultation document (compare-and-set on ``version``), the specialists'
bookings, the ``consultation.*`` event(s) (outbox) and the audit record.  A refused command
raises a :class:`~services.workflow.errors.WorkflowError` and changes nothing.

Scope: a clinic sees its organisation's consultations, a reader those he is invited to, a
coordinator his centre's (the coordinating centre), an admin all; the rest is "not found".
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from ...core.auth import Principal
from ...core.events import Event, new_traceparent
from ...core.runtime import Runtime
from ...core.store.port import DuplicateKey
from ..context import CommandContext, settings_of
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..leases import iso
from ..values import text as _text
from ..values import timestamp as _time
from . import commands as c
from . import model

CONSULTATIONS = "consultations"
NOTES = "consultation_notes"
BOOKINGS = "bookings"
INVITATIONS = "consultation_invitations"
SYSTEM = Principal("system:workflow", "system", "", None, "")
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_SPECIALISTS = 10
MAX_STUDIES = 50

Doc = dict[str, Any]

# action -> roles that may do it (scope is checked separately)
ROLES_FOR: dict[str, tuple[str, ...]] = {
    "request": ("clinic", "admin"),
    "withdraw": ("clinic", "admin"),
    "triage": ("coordinator", "admin"),
    "schedule": ("coordinator", "admin"),
    "reschedule": ("coordinator", "admin"),
    "cancel": ("coordinator", "admin"),
    "start": ("reader", "coordinator", "admin"),
    "add_note": ("reader",),
    "conclude": ("reader",),
}


def sees(actor: Principal, doc: Doc) -> bool:
    if actor.role == "admin":
        return True
    if actor.role == "clinic":
        return doc.get("organization") == actor.organization
    if actor.role == "reader":
        return actor.user_id in (doc.get("specialist_ids") or [])
    if actor.role == "coordinator":
        return actor.reads_for(doc.get("centre"))
    return False


class _Ctx(CommandContext):
    """A consultation command's context: events and audit records about one consultation."""

    def event(self, type: str, doc: Doc, **data: Any) -> Event:
        body = {"consultation_id": doc["id"], "organization": doc["organization"], "centre": doc.get("centre"),
                "state": doc["state"], "actor": self.actor.user_id, "urgency": doc["urgency"],
                "requested_at": doc["requested_at"], "specialty": doc.get("specialty"),
                "patient_id": doc.get("patient_id"), "patient_name": doc.get("patient_name"), **data}
        return self.emit(f"consultation.{type}", doc["id"], body)

    async def audit(self, action: str, doc: Doc, **detail: Any) -> None:
        await self.record(f"consultation.{action}", f"consultation/{doc['id']}", doc["organization"], **detail)


async def execute(rt: Runtime, command: c.Command, *, actor: Principal, remote: str | None = None) -> Doc:
    """Apply ``command`` as ``actor``; return the consultation (the note for :class:`~.commands.AddNote`)."""
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise Invalid(f"unknown consultation command {type(command).__name__}")
    async with rt.store.transaction() as tx:
        ctx = _Ctx(rt, tx, actor, remote, settings_of(rt).now(), new_traceparent())
        return await handler(ctx, command)


# --- helpers ----------------------------------------------------------------------------------

def _may(ctx: _Ctx, action: str) -> None:
    if ctx.actor.role not in ROLES_FOR[action]:
        raise Forbidden(f"a {ctx.actor.role} may not {action.replace('_', ' ')} a consultation")


async def _visible(ctx: _Ctx, consultation_id: str, action: str) -> Doc:
    doc = await ctx.tx.get(CONSULTATIONS, consultation_id) if isinstance(consultation_id, str) else None
    if doc is None or not sees(ctx.actor, doc):
        raise NotFound(f"no consultation {consultation_id!r}")
    _may(ctx, action)
    return doc


async def _apply(ctx: _Ctx, doc: Doc, action: str, changes: Doc | None = None) -> Doc:
    update = model.transition(doc, action, at=ctx.at, by=ctx.actor.user_id, changes=changes)
    if not await ctx.tx.update(CONSULTATIONS, doc["id"], update, where={"version": doc.get("version", 0)}):
        raise Conflict(f"consultation {doc['id']} changed concurrently; reload and try again")
    return {**doc, **update}


def _name(rt: Runtime, user_id: str) -> str:
    user = rt.consortium.users.get(user_id)
    return user.name if user else user_id


def coordinating_centres(rt: Runtime, organization: str, *, specialty: str | None = None) -> list[str]:
    """The clinic's upper centres, nearest first (see docs/consultation.md, "Routing").

    The centres of the organisations above the clinic, nearest organisation first and in
    file order within one; centres with a coordinator before those without; with a
    specialty, centres that have a reader of that specialty first.
    """
    consortium = rt.consortium
    chain = consortium.ancestors(organization)[1:]
    found = [cn.id for org in chain for cn in consortium.centres_of(org)]
    users = consortium.users.values()

    def has(centre: str, role: str, spec: str | None = None) -> bool:
        return any(u.reads_for(centre) and u.role == role and (spec is None or u.specialty == spec) for u in users)

    def rank(centre: str) -> tuple[int, int]:
        return (0 if specialty and has(centre, "reader", specialty) else 1, 0 if has(centre, "coordinator") else 1)
    return sorted(found, key=rank)  # sorted() is stable: nearest first within a rank


def _panel(rt: Runtime, specialists: Any, lead: Any) -> tuple[list[Doc], str]:
    if not isinstance(specialists, (list, tuple)) or not specialists:
        raise Invalid("specialists must list at least one reader (user id)")
    if len(specialists) > MAX_SPECIALISTS:
        raise Invalid(f"at most {MAX_SPECIALISTS} specialists")
    if len(set(specialists)) != len(specialists):
        raise Invalid("specialists must not repeat")
    lead = lead if lead is not None else specialists[0]
    if lead not in specialists:
        raise Invalid(f"the lead {lead!r} must be one of the specialists")
    panel = []
    for uid in specialists:
        user = rt.consortium.users.get(uid) if isinstance(uid, str) else None
        if user is None or user.role != "reader":
            raise Invalid(f"specialist {uid!r} is not a reader of the consortium")
        panel.append({"id": user.id, "name": user.name, "centre": user.centre, "organization": user.organization,
                      "specialty": user.specialty, "lead": user.id == lead})
    return panel, lead


async def _release(ctx: _Ctx, doc: Doc) -> None:
    for booking in await ctx.tx.find(BOOKINGS, {"consultation_id": doc["id"]}):
        await ctx.tx.delete(BOOKINGS, booking["id"])


async def _book(ctx: _Ctx, doc: Doc, panel: list[Doc], start: float, end: float) -> None:
    """Hold every specialist's cells; 409 naming the first clash.  Atomic: a cell is a unique id,
    so of two concurrent bookings of one specialist exactly one inserts it."""
    start_iso, end_iso = iso(start), iso(end)
    for member in panel:
        for cell in model.booking_cells(start, end):
            bid = model.booking_id(member["id"], cell)
            held = await ctx.tx.get(BOOKINGS, bid)
            if held is None:
                try:
                    await ctx.tx.insert(BOOKINGS, {"id": bid, "specialist": member["id"], "cell": iso(cell),
                                                   "consultation_id": doc["id"], "slot_start": start_iso,
                                                   "slot_end": end_iso})
                    continue
                except DuplicateKey:
                    held = await ctx.tx.get(BOOKINGS, bid) or {}
            raise Conflict(f"specialist {member['id']} ({member['name']}) is already booked "
                           f"{held.get('slot_start')}–{held.get('slot_end')} for consultation "
                           f"{held.get('consultation_id')}; {start_iso}–{end_iso} overlaps it")
    for old in await ctx.tx.find(INVITATIONS, {"consultation_id": doc["id"]}):
        await ctx.tx.delete(INVITATIONS, old["id"])
    for member in panel:
        await ctx.tx.insert(INVITATIONS, {"id": f"{doc['id']}|{member['id']}", "consultation_id": doc["id"],
                                          "specialist": member["id"], "slot_start": start_iso, "lead": member["lead"]})


def _slot(cmd: c.Schedule | c.Reschedule, now: float) -> tuple[float, float]:
    start, end = _time(cmd.start, "start"), _time(cmd.end, "end")
    model.check_slot(start, end, now)
    return start, end


# --- command handlers ----------------------------------------------------------------------------

async def _request(ctx: _Ctx, cmd: c.RequestConsultation) -> Doc:
    _may(ctx, "request")
    rt = ctx.rt
    organization = ctx.actor.organization
    if cmd.urgency not in model.URGENCIES:
        raise Invalid(f"urgency must be one of {', '.join(model.URGENCIES)}, not {cmd.urgency!r}")
    summary = {k: _text(getattr(cmd, k), k, required=k in ("chief_complaint", "question"))
               for k in ("chief_complaint", "history", "current_treatment", "question")}
    uids = list(cmd.study_uids or ())
    if len(uids) > MAX_STUDIES or len(set(uids)) != len(uids):
        raise Invalid(f"study_uids must be distinct and at most {MAX_STUDIES}")
    studies = []
    for uid in uids:
        if not isinstance(uid, str) or not UID.match(uid) or len(uid) > 64:
            raise Invalid(f"study_uid {uid!r} is not a DICOM UID")
        study = await ctx.tx.get("studies", uid)
        if study is None or (ctx.actor.role != "admin" and study.get("organization") != organization):
            raise NotFound(f"no study {uid}")
        studies.append(study)
    if ctx.actor.role == "admin":  # an admin files on a clinic's behalf: the studies say which
        organization = studies[0]["organization"] if studies else None
        if organization is None:
            raise Invalid("an admin must attach at least one study (it names the clinic)")
    patient_id = _text(cmd.patient_id, "patient_id", required=False, limit=64) or None
    patient_name = _text(cmd.patient_name, "patient_name", required=False, limit=200) or None
    if patient_id and not patient_name:
        own = [s for s in studies if s.get("patient_id") == patient_id] or await ctx.tx.find(
            "studies", {"organization": organization, "patient_id": patient_id}, limit=1)
        if not own:
            raise NotFound(f"no study of patient {patient_id!r} in {organization}; give patient_name for a "
                           "patient without studies")
        patient_name = own[0].get("patient_name")
    if not patient_id and not patient_name:
        if not studies:
            raise Invalid("name the patient: patient_id (of your studies), patient_name, or attach studies")
        patient_id, patient_name = studies[0].get("patient_id"), studies[0].get("patient_name")
    others = {s.get("patient_id") for s in studies} - {patient_id}
    if patient_id and others:
        raise Invalid(f"attached studies belong to other patients ({', '.join(sorted(map(str, others)))})")
    windows = []
    for i, w in enumerate(cmd.preferred_windows or ()):
        if not isinstance(w, dict):
            raise Invalid(f"preferred_windows[{i}] must be an object with start and end")
        ws, we = _time(w.get("start"), f"preferred_windows[{i}].start"), _time(w.get("end"), f"preferred_windows[{i}].end")
        if we <= ws:
            raise Invalid(f"preferred_windows[{i}] must end after it starts")
        windows.append({"start": iso(ws), "end": iso(we)})
    specialty = _text(cmd.specialty, "specialty", required=False, limit=64) or None
    centre = None
    if cmd.specialist is not None:
        user = rt.consortium.users.get(cmd.specialist) if isinstance(cmd.specialist, str) else None
        if user is None or user.role != "reader":
            raise Invalid(f"specialist {cmd.specialist!r} is not a reader of the consortium")
        centre = user.centre
        specialty = specialty or user.specialty
    else:
        candidates = coordinating_centres(rt, organization, specialty=specialty)
        if not candidates:
            raise Invalid(f"{organization} has no reading centre above it to coordinate a consultation")
        centre = candidates[0]
    doc = {
        "id": f"cs-{uuid.uuid4().hex[:20]}", "organization": organization, "centre": centre,
        "requested_by": ctx.actor.user_id, "requested_at": ctx.at, "urgency": cmd.urgency,
        "patient_id": patient_id, "patient_name": patient_name, "patient_source": "study" if patient_id else "free_text",
        "case_summary": summary, "study_uids": uids, "specialty": specialty,
        "requested_specialist": cmd.specialist, "preferred_windows": windows, "state": "requested",
        "triage": None, "slot_start": None, "slot_end": None, "specialists": [], "specialist_ids": [],
        "lead": None, "meeting_url": None, "scheduled_at": None, "reschedules": [], "reminder_sent": False,
        "started_at": None, "concluded_at": None, "opinion": None, "cancellation": None, "withdrawal": None,
        "no_show_at": None, "notes_count": 0, "version": 0, "updated_at": ctx.at,
        "history": [{"action": "request", "state": "requested", "at": ctx.at, "by": ctx.actor.user_id}],
    }
    await ctx.tx.insert(CONSULTATIONS, doc)
    ctx.event("requested", doc, study_uids=uids, preferred_windows=windows, requested_specialist=cmd.specialist)
    await ctx.audit("request", doc, centre=centre, study_uids=uids, urgency=cmd.urgency)
    return doc


async def _withdraw(ctx: _Ctx, cmd: c.Withdraw) -> Doc:
    doc = await _visible(ctx, cmd.consultation_id, "withdraw")
    reason = _text(cmd.reason, "reason", limit=2000)
    doc = await _apply(ctx, doc, "withdraw", {"withdrawal": {"reason": reason, "by": ctx.actor.user_id, "at": ctx.at}})
    ctx.event("withdrawn", doc, reason=reason)
    await ctx.audit("withdraw", doc, reason=reason)
    return doc


async def _triage(ctx: _Ctx, cmd: c.Triage) -> Doc:
    doc = await _visible(ctx, cmd.consultation_id, "triage")
    note = _text(cmd.note, "note", required=False, limit=2000)
    specialty = _text(cmd.specialty, "specialty", required=False, limit=64) or doc.get("specialty")
    doc = await _apply(ctx, doc, "triage", {"specialty": specialty,
                                            "triage": {"note": note, "by": ctx.actor.user_id, "at": ctx.at}})
    ctx.event("triaged", doc, note=note)
    await ctx.audit("triage", doc, note=note)
    return doc


async def _schedule(ctx: _Ctx, cmd: c.Schedule) -> Doc:
    doc = await _visible(ctx, cmd.consultation_id, "schedule")
    model.require(doc["state"], "schedule")
    start, end = _slot(cmd, ctx.now)
    panel, lead = _panel(ctx.rt, list(cmd.specialists or ()), cmd.lead)
    url = model.meeting_url(ctx.rt.consortium.consultation.meeting_url_template, doc["id"])
    await _book(ctx, doc, panel, start, end)
    doc = await _apply(ctx, doc, "schedule", {
        "slot_start": iso(start), "slot_end": iso(end), "specialists": panel, "specialist_ids": [m["id"] for m in panel],
        "lead": lead, "meeting_url": url, "scheduled_at": ctx.at, "reminder_sent": False})
    ctx.event("scheduled", doc, slot_start=doc["slot_start"], slot_end=doc["slot_end"], specialists=panel,
              meeting_url=url, lead=lead)
    await ctx.audit("schedule", doc, slot_start=doc["slot_start"], slot_end=doc["slot_end"],
                    specialists=doc["specialist_ids"], lead=lead, meeting_url=url)
    return doc


async def _reschedule(ctx: _Ctx, cmd: c.Reschedule) -> Doc:
    doc = await _visible(ctx, cmd.consultation_id, "reschedule")
    model.require(doc["state"], "reschedule")
    reason = _text(cmd.reason, "reason", limit=2000)
    start, end = _slot(cmd, ctx.now)
    if cmd.specialists:
        panel, lead = _panel(ctx.rt, list(cmd.specialists), cmd.lead)
    else:
        panel, lead = _panel(ctx.rt, doc["specialist_ids"], cmd.lead or doc["lead"])
    previous = {"start": doc["slot_start"], "end": doc["slot_end"]}
    await _release(ctx, doc)
    await _book(ctx, doc, panel, start, end)
    entry = {"from": previous, "to": {"start": iso(start), "end": iso(end)}, "reason": reason,
             "by": ctx.actor.user_id, "at": ctx.at}
    doc = await _apply(ctx, doc, "reschedule", {
        "slot_start": iso(start), "slot_end": iso(end), "specialists": panel, "specialist_ids": [m["id"] for m in panel],
        "lead": lead, "reminder_sent": False, "no_show_at": None, "reschedules": [*doc["reschedules"], entry]})
    # Everyone of the old and the new panel hears of it.
    ctx.event("rescheduled", doc, slot_start=doc["slot_start"], slot_end=doc["slot_end"], previous_slot=previous,
              reason=reason, specialists=panel, meeting_url=doc.get("meeting_url"), lead=lead)
    await ctx.audit("reschedule", doc, previous_slot=previous, slot_start=doc["slot_start"],
                    slot_end=doc["slot_end"], specialists=doc["specialist_ids"], reason=reason)
    return doc


async def _cancel(ctx: _Ctx, cmd: c.Cancel) -> Doc:
    doc = await _visible(ctx, cmd.consultation_id, "cancel")
    reason = _text(cmd.reason, "reason", limit=2000)
    doc = await _apply(ctx, doc, "cancel", {"cancellation": {"reason": reason, "by": ctx.actor.user_id,
                                                             "at": ctx.at}})
    await _release(ctx, doc)
    ctx.event("cancelled", doc, reason=reason, specialists=doc.get("specialists") or [])
    await ctx.audit("cancel", doc, reason=reason)
    return doc


async def _start(ctx: _Ctx, cmd: c.Start) -> Doc:
    doc = await _visible(ctx, cmd.consultation_id, "start")
    doc = await _apply(ctx, doc, "start", {"started_at": ctx.at})
    ctx.event("started", doc, slot_start=doc["slot_start"], slot_end=doc["slot_end"], started_at=ctx.at)
    await ctx.audit("start", doc)
    return doc


async def _add_note(ctx: _Ctx, cmd: c.AddNote) -> Doc:
    doc = await _visible(ctx, cmd.consultation_id, "add_note")
    text = _text(cmd.text, "text", limit=20_000)
    seq = doc.get("notes_count", 0) + 1  # the order notes were written in (times may tie)
    note = {"id": f"cn-{uuid.uuid4().hex[:20]}", "consultation_id": doc["id"], "seq": seq,
            "author_id": ctx.actor.user_id,
            "author_name": _name(ctx.rt, ctx.actor.user_id), "author_centre": ctx.actor.centre, "text": text,
            "at": ctx.at}
    doc = await _apply(ctx, doc, "add_note", {"notes_count": seq})
    await ctx.tx.insert(NOTES, note)
    ctx.event("note_added", doc, note_id=note["id"], author_id=note["author_id"], author_name=note["author_name"])
    await ctx.audit("note", doc, note_id=note["id"])
    return note


async def _conclude(ctx: _Ctx, cmd: c.Conclude) -> Doc:
    doc = await _visible(ctx, cmd.consultation_id, "conclude")
    model.require(doc["state"], "conclude")
    if doc.get("lead") != ctx.actor.user_id:
        raise Forbidden(f"only the lead specialist ({doc.get('lead')}) signs the consultation opinion")
    assessment = _text(cmd.assessment, "assessment", limit=20_000)
    r = cmd.recommendations if isinstance(cmd.recommendations, dict) else {}
    recommendations = model.recommendations(r.get("disposition"), r.get("plan"), r.get("referral"),
                                            r.get("follow_up_date"))
    cosigners = list(cmd.signers or ())
    for uid in cosigners:
        if uid not in doc["specialist_ids"]:
            raise Invalid(f"signer {uid!r} is not on this consultation's panel")
    by_id = {m["id"]: m for m in doc["specialists"]}
    signers = [{"id": uid, "name": by_id[uid]["name"], "centre": by_id[uid]["centre"]}
               for uid in dict.fromkeys([ctx.actor.user_id, *cosigners])]
    opinion = {"id": f"co-{uuid.uuid4().hex[:20]}", "assessment": assessment, "recommendations": recommendations,
               "signers": signers, "signed_by": ctx.actor.user_id, "signed_at": ctx.at, "critical": False}
    doc = await _apply(ctx, doc, "conclude", {"opinion": opinion, "concluded_at": ctx.at})
    await _release(ctx, doc)
    ctx.event("concluded", doc, opinion_id=opinion["id"], study_uids=doc["study_uids"], signed_at=ctx.at,
              signers=signers, assessment=assessment, recommendations=recommendations, critical=False,
              lead=ctx.actor.user_id)
    await ctx.audit("conclude", doc, opinion_id=opinion["id"], disposition=recommendations["disposition"],
                    signers=[s["id"] for s in signers])
    return doc


_HANDLERS = {c.RequestConsultation: _request, c.Withdraw: _withdraw, c.Triage: _triage, c.Schedule: _schedule,
             c.Reschedule: _reschedule, c.Cancel: _cancel, c.Start: _start, c.AddNote: _add_note,
             c.Conclude: _conclude}

