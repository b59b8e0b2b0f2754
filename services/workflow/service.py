"""Command and event handlers of the reading workflow.

:func:`execute` is the one entry point for the API: it checks the caller's role and
scope, then applies the command in ONE store transaction that writes the document
change, emits its event(s) (outbox) and appends the audit record.  The handlers of
``study.received`` (site rules, waiting requests) and the lease sweeper work the same
way with the actor ``system:workflow``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from typing import Any

from ..core.auth import Principal
from ..core.consortium import GREEN_CHANNELS, KINDS, PRIORITIES
from ..core.events import Event, new_traceparent
from ..core.runtime import Runtime
from . import commands as c
from . import model, policy, recognition, rosters, routing, template_store, templates
from .context import CommandContext, settings_of
from .errors import Conflict, Forbidden, Invalid, NotFound
from .leases import iso

log = logging.getLogger("yilian.workflow")

RR = "reading_requests"
SYSTEM = Principal("system:workflow", "system", "", None, "")
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_TEXT = 20_000

Doc = dict[str, Any]


class _Ctx(CommandContext):
    """A reading command's context: events about one reading request."""

    def event(self, type: str, doc: Doc, **data: Any) -> Event:
        body = {"request_id": doc["id"], "study_uid": doc["study_uid"], "organization": doc["organization"],
                "kind": doc["kind"], "priority": doc["priority"], "state": doc["state"],
                "centre": doc.get("centre"), "actor": self.actor.user_id, **data}
        return self.emit(type, doc["id"], body)

    async def audit(self, action: str, resource: str, organization: str | None, **detail: Any) -> None:
        await self.record(action, resource, organization, **detail)


async def execute(rt: Runtime, command: c.Command, *, actor: Principal, remote: str | None = None) -> Doc:
    """Apply ``command`` as ``actor``; return the updated reading request (the report for
    :class:`~.commands.Addendum`).  Raises a :class:`~.errors.WorkflowError`; then nothing changed."""
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise Invalid(f"unknown workflow command {type(command).__name__}")
    async with rt.store.transaction() as tx:
        ctx = _Ctx(rt, tx, actor, remote, settings_of(rt).now(), new_traceparent())
        return await handler(ctx, command)


# --- helpers ----------------------------------------------------------------------------

async def _visible_request(ctx: _Ctx, request_id: str, action: str) -> Doc:
    doc = await ctx.tx.get(RR, request_id) if isinstance(request_id, str) else None
    if doc is None or not policy.sees_request(ctx.actor, doc):
        raise NotFound(f"no reading request {request_id!r}")
    if not policy.may(ctx.actor, action):
        raise Forbidden(f"a {ctx.actor.role} may not {action.replace('_', ' ')} a reading request")
    return doc


def _check_holder(ctx: _Ctx, doc: Doc, action: str) -> None:
    """The lease holder's actions: allowed state, held by the caller, lease still valid."""
    model.require(doc["state"], action)
    if ctx.actor.role != "reader":
        return  # coordinator/admin releasing on a reader's behalf
    if doc.get("claimed_by") != ctx.actor.user_id:
        raise Conflict(f"reading request {doc['id']} is held by another reader")
    if (doc.get("lease_expires_at") or "") < ctx.at:
        raise Conflict(f"your lease on reading request {doc['id']} expired at {doc['lease_expires_at']}; "
                       "claim it again")


async def _apply(ctx: _Ctx, doc: Doc, action: str, changes: Doc | None = None) -> Doc:
    """Write ``action``'s transition with a compare-and-set on ``version``; return the new document."""
    update = model.transition(doc, action, at=ctx.at, by=ctx.actor.user_id, changes=changes)
    if not await ctx.tx.update(RR, doc["id"], update, where={"version": doc.get("version", 0)}):
        raise Conflict(f"reading request {doc['id']} changed concurrently; reload and try again")
    return {**doc, **update}


def _text(value: Any, what: str, *, required: bool = True, limit: int = MAX_TEXT) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise Invalid(f"{what} must be a string")
    if required and not value.strip():
        raise Invalid(f"{what} must not be empty")
    if len(value) > limit:
        raise Invalid(f"{what} is longer than {limit} characters")
    return value


# What a reading request carries to its report (and the report document): the retention class and
# who asked, from the order, else from the study's DICOM header (Admission ID, Requesting Service /
# Physician); a request's own ``record_class`` wins over both.
CARRIED = ("record_class", "requesting_department", "requesting_physician")


def record_class(consortium, value: Any) -> str | None:
    """A record class (电子病历应用管理规范第19条) the consortium keeps periods for, or None."""
    if value is None:
        return None
    classes = sorted(consortium.retention.years)
    if not isinstance(value, str) or value not in classes:
        raise Invalid(f"record_class must be one of {', '.join(classes)}, not {value!r}")
    return value


def carried_of_study(study: Doc) -> Doc:
    """:data:`CARRIED` as the study's DICOM header has them (the Referring Physician when no
    Requesting Physician was sent: in a clinic's own exam they are one doctor)."""
    return {"record_class": study.get("record_class") or None,
            "requesting_department": study.get("requesting_department") or None,
            "requesting_physician": study.get("requesting_physician") or study.get("referring_physician") or None}


def _user_name(ctx: _Ctx) -> str:
    user = ctx.rt.consortium.users.get(ctx.actor.user_id)
    return user.name if user else ctx.actor.user_id


def _lease_until(ctx: _Ctx) -> str:
    return iso(ctx.now + ctx.settings.lease_seconds)


def _arrived(study: Doc | None) -> bool:
    """A study has fully arrived once announced by ``study.received`` at least once."""
    return study is not None and (study.get("state") == "received" or (study.get("revision") or 0) > 0)


def new_request(consortium, *, id: str, study_uid: str, organization: str, kind: str, priority: str,
                clinical_question: str, green_channel: str | None, signed_resident: bool, source: str,
                requested_by: str, at: str, study: Doc | None) -> Doc:
    """A fresh reading request document in state ``requested``."""
    study = study or {}
    return {
        "id": id, "study_uid": study_uid, "organization": organization, "kind": kind,
        "modality": None, "priority": priority, "priority_rank": model.PRIORITY_RANK[priority],
        "boost_rank": model.boost_rank(consortium.priority_boost, green_channel=green_channel,
                                       signed_resident=signed_resident),
        "clinical_question": clinical_question, "green_channel": green_channel,
        "signed_resident": bool(signed_resident), "source": source, "requested_by": requested_by,
        "requested_at": at, "state": "requested", "on_worklist": False, "centre": None, "routed_centre": None,
        "deadline": None, "queued_at": None, "sla_risk_at": None, "sla_at_risk": False, "overflow": None,
        "moves": [], "patient_id": study.get("patient_id"), "patient_name": study.get("patient_name"),
        "accession_number": study.get("accession_number"), "study_description": study.get("study_description"),
        "claimed_by": None, "claimed_by_name": None, "claimed_at": None, "lease_expires_at": None,
        "draft": None, "report_id": None, "signed_at": None, "signed_by": None, "addenda": [],
        "escalated_to": None, "escalated_from": None, "escalation_reason": None,
        "return": None, "cancellation": None, "version": 0, "updated_at": at,
        "history": [{"action": "request", "state": "requested", "at": at, "by": requested_by}],
        **carried_of_study(study),
    }


async def _load(ctx: _Ctx, centre: str, doc: Doc, deadline: str) -> routing.CentreLoad:
    """How much the centre has to read before ``doc`` (counted outside the transaction: an estimate)."""
    consortium = ctx.rt.consortium
    p, b = doc["priority_rank"], doc["boost_rank"]
    ahead = await ctx.rt.store.count(RR, {"centre": centre, "on_worklist": True,
                                          "$or": [{"priority_rank": {"$lt": p}},
                                                  {"priority_rank": p, "boost_rank": {"$lt": b}},
                                                  {"priority_rank": p, "boost_rank": b,
                                                   "deadline": {"$lte": deadline}}]})
    # on-duty capacity: the centre's roster now (day and night shifts), or the file's on_duty flags
    on_duty = await rosters.readers_on_duty(ctx.rt.store, consortium, centre, ctx.at)
    return routing.CentreLoad(centre, ahead, len(on_duty), consortium.centres[centre].capacity_per_reader_per_hour)


async def _route_and_queue(ctx: _Ctx, doc: Doc, study: Doc, *, centres: list[str] | None = None) -> Doc:
    """requested -> queued: choose the centre (SLA-aware), stamp the deadline, emit ``reading.queued``."""
    consortium = ctx.rt.consortium
    modality = routing.reading_modality(consortium, doc["organization"], doc["kind"], study.get("modalities") or [])
    candidates = centres or routing.centres_for(consortium, doc["organization"], doc["kind"], modality)
    sla = consortium.sla_seconds(doc["kind"], doc["priority"])
    deadline = iso(ctx.now + sla)
    loads = [await _load(ctx, centre, doc, deadline) for centre in candidates]
    decision = routing.choose(loads, sla)
    overflow = None
    moves = list(doc.get("moves", []))
    if decision.overflow:
        overflow = {"from": decision.routed_centre, "to": decision.centre, "reason": decision.overflow_reason}
        moves.append({**overflow, "by": "system:workflow", "at": ctx.at, "manual": False})
    patient = {k: study.get(k) or doc.get(k) for k in ("patient_id", "patient_name", "accession_number",
                                                        "study_description")}
    patient.update({k: doc.get(k) or v for k, v in carried_of_study(study).items()})  # the request's (order's) first
    doc = await _apply(ctx, doc, "route", {
        "modality": modality, "centre": decision.centre, "routed_centre": decision.routed_centre,
        "deadline": deadline, "queued_at": ctx.at,
        "sla_risk_at": iso(ctx.now + sla * ctx.settings.sla_risk_fraction),
        "estimated_finish_seconds": decision.estimated_finish_seconds, "overflow": overflow, "moves": moves,
        **patient})
    ctx.event("reading.queued", doc, deadline=deadline, modality=modality,
              routed_centre=decision.routed_centre, overflow=overflow,
              estimated_finish_seconds=decision.estimated_finish_seconds,
              green_channel=doc["green_channel"], signed_resident=doc["signed_resident"])
    await ctx.audit("reading.queue", f"reading/{doc['id']}", doc["organization"], centre=decision.centre,
                    overflow=overflow)
    return doc


# --- command handlers -------------------------------------------------------------------

async def _request(ctx: _Ctx, cmd: c.RequestReading) -> Doc:
    if not policy.may(ctx.actor, "request"):
        raise Forbidden(f"a {ctx.actor.role} may not request readings")
    if not isinstance(cmd.study_uid, str) or not UID.match(cmd.study_uid) or len(cmd.study_uid) > 64:
        raise Invalid(f"study_uid {cmd.study_uid!r} is not a DICOM UID")
    if cmd.kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}, not {cmd.kind!r}")
    if cmd.priority not in PRIORITIES:
        raise Invalid(f"priority must be one of {', '.join(PRIORITIES)}, not {cmd.priority!r}")
    if cmd.green_channel is not None and cmd.green_channel not in GREEN_CHANNELS:
        raise Invalid(f"green_channel must be one of {', '.join(GREEN_CHANNELS)}, not {cmd.green_channel!r}")
    if not isinstance(cmd.signed_resident, bool):
        raise Invalid("signed_resident must be true or false")
    question = _text(cmd.clinical_question, "clinical_question", limit=4000)
    wanted_class = record_class(ctx.rt.consortium, cmd.record_class)
    study = await ctx.tx.get("studies", cmd.study_uid)
    if study is not None and not policy.sees_study(ctx.actor, study):
        if ctx.actor.role != "clinic":
            raise NotFound(f"no study {cmd.study_uid}")
        # Another organisation's study is answered as an unknown one (a request that waits), so a
        # clinic cannot learn which Study UIDs exist elsewhere; it is never queued (on_study_received).
        study = None
    if study is None and ctx.actor.role != "clinic":
        raise NotFound(f"no study {cmd.study_uid} (only its clinic may request a reading before it arrives)")
    organization = study["organization"] if study else ctx.actor.organization
    existing = await ctx.tx.find(RR, {"study_uid": cmd.study_uid, "kind": cmd.kind, "organization": organization,
                                      "state": {"$in": list(model.OPEN_STATES)}}, limit=1)
    if existing:
        raise Conflict(f"study {cmd.study_uid} already has an open {cmd.kind} reading request {existing[0]['id']}")
    decision = None
    if study is not None and ctx.actor.role == "clinic":
        # 结果互认: another still-valid recognised result of this exam holds the request for a reason code.
        recognised = {i.modality for i in ctx.rt.consortium.recognition}
        decision = await recognition.gate(
            ctx, subject=f"study/{study['id']}", organization=organization, patient_id=study.get("patient_id"),
            identity=study.get("identity"),
            modality=next((m for m in study.get("modalities") or [] if m in recognised), None),
            body_part=await recognition.body_part_of(ctx.tx, study), recognition=cmd.recognition,
            exclude=(study["id"],))
    doc = new_request(ctx.rt.consortium, id=f"rr-{uuid.uuid4().hex[:20]}", study_uid=cmd.study_uid,
                      organization=organization, kind=cmd.kind, priority=cmd.priority,
                      clinical_question=question, green_channel=cmd.green_channel,
                      signed_resident=cmd.signed_resident, source="clinic", requested_by=ctx.actor.user_id,
                      at=ctx.at, study=study)
    # The exam request (order) the study came for says who asked and the record class.
    linked = await ctx.tx.find("orders", {"study_uid": cmd.study_uid, "organization": organization}, limit=1)
    doc.update({k: linked[0][k] for k in CARRIED if linked and linked[0].get(k)})
    if wanted_class is not None:
        doc["record_class"] = wanted_class
    doc["recognition"] = decision
    if _arrived(study):
        # Fail before writing anything if no centre reads this.
        routing.centres_for(ctx.rt.consortium, organization, cmd.kind,
                            routing.reading_modality(ctx.rt.consortium, organization, cmd.kind,
                                                     study.get("modalities") or []))
    await ctx.tx.insert(RR, doc)
    ctx.event("reading.requested", doc, source="clinic", clinical_question=question,
              green_channel=cmd.green_channel, signed_resident=cmd.signed_resident, waiting=not _arrived(study))
    await ctx.audit("reading.request", f"reading/{doc['id']}", organization, study_uid=cmd.study_uid,
                    kind=cmd.kind, priority=cmd.priority)
    if _arrived(study):
        doc = await _route_and_queue(ctx, doc, study)
    return doc


async def _cancel(ctx: _Ctx, cmd: c.CancelReading) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "cancel")
    reason = _text(cmd.reason, "reason", limit=2000)
    doc = await _apply(ctx, doc, "cancel", {"cancellation": {"reason": reason, "by": ctx.actor.user_id,
                                                             "at": ctx.at}})
    ctx.event("reading.cancelled", doc, reason=reason)
    await ctx.audit("reading.cancel", f"reading/{doc['id']}", doc["organization"], reason=reason)
    return doc


async def _claim(ctx: _Ctx, cmd: c.Claim) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "claim")
    if doc["state"] in model.HELD_STATES:
        if doc.get("claimed_by") == ctx.actor.user_id:
            return await _renew(ctx, c.RenewLease(cmd.request_id), doc=doc)
        raise Conflict(f"reading request {doc['id']} is already claimed by another reader")
    until = _lease_until(ctx)
    doc = await _apply(ctx, doc, "claim", {"claimed_by": ctx.actor.user_id, "claimed_by_name": _user_name(ctx),
                                           "claimed_at": ctx.at, "lease_expires_at": until})
    ctx.event("reading.claimed", doc, reader_id=ctx.actor.user_id, lease_expires_at=until)
    await ctx.audit("reading.claim", f"reading/{doc['id']}", doc["organization"], lease_expires_at=until)
    return doc


async def _renew(ctx: _Ctx, cmd: c.RenewLease, *, doc: Doc | None = None) -> Doc:
    doc = doc or await _visible_request(ctx, cmd.request_id, "renew")
    _check_holder(ctx, doc, "renew")
    until = _lease_until(ctx)
    doc = await _apply(ctx, doc, "renew", {"lease_expires_at": until})
    await ctx.audit("reading.renew", f"reading/{doc['id']}", doc["organization"], lease_expires_at=until)
    return doc


async def _release(ctx: _Ctx, cmd: c.Release) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "release")
    _check_holder(ctx, doc, "release")
    held_by = doc.get("claimed_by")
    doc = await _apply(ctx, doc, "release")
    ctx.event("reading.released", doc, reader_id=held_by)
    await ctx.audit("reading.release", f"reading/{doc['id']}", doc["organization"], reader_id=held_by)
    return doc


REPORT_CONTENT = ("findings", "impression", "critical", "critical_category", "template_id", "template_version",
                  "fields")
VERSIONS = "report_versions"


def _report_values(cmd: c.SaveDraft | c.Sign | c.Review, draft: Doc | None) -> tuple[str, str, bool, str | None]:
    draft = draft or {}
    findings = cmd.findings if cmd.findings is not None else draft.get("findings")
    impression = cmd.impression if cmd.impression is not None else draft.get("impression")
    critical = cmd.critical if cmd.critical is not None else draft.get("critical", False)
    category = cmd.critical_category if cmd.critical is not None or cmd.critical_category is not None \
        else draft.get("critical_category")
    for value, what in ((findings, "findings"), (impression, "impression")):
        if value is not None:
            _text(value, what, required=False)
    if not isinstance(critical, bool):
        raise Invalid("critical must be true or false")
    if category is not None:
        _text(category, "critical_category", limit=200)
    return findings or "", impression or "", critical, category or None


async def _template_values(ctx: _Ctx, doc: Doc, cmd: c.SaveDraft | c.Sign | c.Review, draft: Doc | None) -> Doc:
    """The template (id, version) a report is written with and its checked structured fields."""
    draft = draft or {}
    if cmd.template_id is not None:
        tid, number = cmd.template_id, cmd.template_version  # None: the newest version
    else:
        tid, number = draft.get("template_id"), draft.get("template_version")
        if cmd.template_version is not None:
            raise Invalid("template_version needs a template_id")
    fields = cmd.fields if cmd.fields is not None else draft.get("fields")
    if tid is None:
        if fields:
            raise Invalid("fields need a template_id (the template that defines them)")
        return {"template_id": None, "template_version": None, "fields": {}}
    if not isinstance(tid, str) or not templates.TEMPLATE_ID.match(tid):
        raise Invalid(f"template_id {tid!r} is not a template id")
    if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 1):
        raise Invalid("template_version must be a positive integer")
    template = await template_store.version(ctx.tx, tid, number)
    if template is None or not templates.visible(template, role=ctx.actor.role, centre=doc.get("centre")):
        raise Invalid(f"no report template {tid!r}" + (f" version {number}" if number is not None else ""))
    if template["kind"] != doc["kind"]:
        raise Invalid(f"template {tid} is for {template['kind']} reports, not {doc['kind']}")
    return {"template_id": tid, "template_version": template["version"],
            "fields": templates.check_fields(template, fields)}


async def _content(ctx: _Ctx, doc: Doc, cmd: c.SaveDraft | c.Sign | c.Review, draft: Doc | None) -> Doc:
    findings, impression, critical, category = _report_values(cmd, draft)
    return {"findings": findings, "impression": impression, "critical": critical, "critical_category": category,
            **await _template_values(ctx, doc, cmd, draft)}


def _signer(ctx: _Ctx, user_id: str, role: str, at: str, centre: str | None) -> Doc:
    """A signer as printed on the report: 报告医生 (``reporting``) or 审核医生 (``reviewing``), signing
    for ``centre`` (the request's: a reader of several centres signs for the one that reads it)."""
    user = ctx.rt.consortium.users.get(user_id)
    return {"role": role, "id": user_id, "name": user.name if user else user_id,
            "title": user.title if user else None, "licence_number": user.licence_number if user else None,
            "centre": centre if centre else (user.centre if user else None), "at": at}


def _next_version(doc: Doc) -> int:
    return (doc.get("report_versions") or 0) + 1


async def _keep_version(ctx: _Ctx, doc: Doc, seq: int, action: str, content: Doc, *, comment: str | None = None,
                        report_id: str | None = None) -> None:
    """Record version ``seq`` of the request's report (never updated afterwards) and what it changed."""
    before = (await ctx.tx.get(VERSIONS, f"{doc['id']}:{seq - 1}") or {}).get("content", {}) if seq > 1 else {}
    changes = {k: {"from": before.get(k), "to": v} for k, v in content.items() if before.get(k) != v}
    await ctx.tx.insert(VERSIONS, {
        "id": f"{doc['id']}:{seq}", "request_id": doc["id"], "seq": seq, "action": action, "state": doc["state"],
        "by": ctx.actor.user_id, "by_name": _user_name(ctx), "at": ctx.at, "content": content, "changes": changes,
        "comment": comment, "report_id": report_id})


async def _save_draft(ctx: _Ctx, cmd: c.SaveDraft) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "save_draft")
    _check_holder(ctx, doc, "save_draft")
    content = await _content(ctx, doc, cmd, None if cmd.template_id is not None else doc.get("draft"))
    if not content["critical"] and content["critical_category"]:
        raise Invalid("critical_category is only allowed with critical=true")
    draft = {**content, "saved_at": ctx.at, "by": ctx.actor.user_id}
    until = _lease_until(ctx)  # working on it renews the lease
    seq = _next_version(doc)
    doc = await _apply(ctx, doc, "save_draft", {"draft": draft, "lease_expires_at": until, "report_versions": seq})
    await _keep_version(ctx, doc, seq, "draft", content)
    ctx.event("reading.draft_saved", doc, reader_id=ctx.actor.user_id, critical=content["critical"],
              lease_expires_at=until)
    await ctx.audit("reading.draft", f"reading/{doc['id']}", doc["organization"], critical=content["critical"],
                    version=seq)
    return doc


def _report_event_data(report: Doc, request: Doc) -> Doc:
    keys = ("study_uid", "organization", "centre", "reader_id", "reader_name", "signed_at", "findings",
            "impression", "critical", "critical_category", "addendum_of", "kind", "patient_id", "patient_name",
            "accession_number", "signers", "reviewer_id", "reviewer_name", "template_id", "template_version",
            "fields", "structured", "version", "clinical_question", "modality", *CARRIED)
    return {"report_id": report["id"], **{k: report.get(k) for k in keys}, "priority": request["priority"]}


def _emit_report(ctx: _Ctx, report: Doc, request: Doc) -> None:
    data = {"request_id": request["id"], "state": request["state"], "actor": ctx.actor.user_id,
            **_report_event_data(report, request)}
    ctx.tx.emit(Event("report.signed", subject=request["id"], data=data, source=ctx.rt.source("workflow"),
                      traceparent=ctx.traceparent))


def _check_report(content: Doc) -> None:
    problems = model.validate_report(content["findings"], content["impression"], content["critical"],
                                     content["critical_category"])
    if problems:
        raise Invalid("cannot sign: " + "; ".join(problems))


async def _structured(ctx: _Ctx, content: Doc) -> list[Doc]:
    """The report's fields with their template's labels and units (the SR codes them item by item)."""
    if not content.get("template_id") or not content.get("fields"):
        return []
    template = await template_store.version(ctx.tx, content["template_id"], content["template_version"])
    return templates.structured(template, content["fields"]) if template else []


async def _new_report(ctx: _Ctx, doc: Doc, content: Doc, *, author: str, signers: list[Doc], version: int) -> Doc:
    user = ctx.rt.consortium.users.get(author)
    reviewer = next((s for s in signers if s["role"] == "reviewing"), None)
    return {"id": f"rp-{uuid.uuid4().hex[:20]}", "request_id": doc["id"], "study_uid": doc["study_uid"],
            "organization": doc["organization"], "centre": doc["centre"], "kind": doc["kind"],
            "modality": doc.get("modality"), "reader_id": author, "reader_name": user.name if user else author,
            "signed_at": ctx.at, **content, "addendum_of": None, "addenda": [],
            "signers": signers, "reviewer_id": reviewer["id"] if reviewer else None,
            "reviewer_name": reviewer["name"] if reviewer else None, "version": version,
            "structured": await _structured(ctx, content),
            "patient_id": doc.get("patient_id"), "patient_name": doc.get("patient_name"),
            "accession_number": doc.get("accession_number"), "clinical_question": doc.get("clinical_question"),
            "escalated_from": doc.get("escalated_from"), **{k: doc.get(k) for k in CARRIED}}


async def _sign(ctx: _Ctx, cmd: c.Sign) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "sign")
    _check_holder(ctx, doc, "sign")
    content = await _content(ctx, doc, cmd, doc.get("draft"))
    _check_report(content)
    if cmd.quality is not None:  # graded when reporting, in the same transaction (docs/quality.md)
        doc = await quality.grade_when_signing(ctx, doc, cmd.quality)
    user = ctx.rt.consortium.users.get(ctx.actor.user_id)
    if not ctx.rt.consortium.centres[doc["centre"]].releases(doc["kind"], user.title if user else None):
        return await _submit(ctx, doc, content)
    seq = _next_version(doc)
    report = await _new_report(ctx, doc, content, author=ctx.actor.user_id,
                         signers=[_signer(ctx, ctx.actor.user_id, "reporting", ctx.at, doc["centre"])], version=seq)
    await ctx.tx.insert("reports", report)
    doc = await _apply(ctx, doc, "sign", {"report_id": report["id"], "signed_at": ctx.at,
                                          "signed_by": ctx.actor.user_id, "report_versions": seq})
    await _keep_version(ctx, doc, seq, "sign", content, report_id=report["id"])
    _emit_report(ctx, report, doc)
    await ctx.audit("report.sign", f"report/{report['id']}", doc["organization"], request_id=doc["id"],
                    critical=content["critical"], critical_category=content["critical_category"], version=seq)
    await quality.on_released(ctx, report)
    return doc


async def _submit(ctx: _Ctx, doc: Doc, content: Doc) -> Doc:
    """A junior's signature: the report waits for a reviewer; nothing reaches the clinic yet."""
    seq = _next_version(doc)
    doc = await _apply(ctx, doc, "submit", {
        "draft": {**content, "saved_at": ctx.at, "by": ctx.actor.user_id}, "submitted_by": ctx.actor.user_id,
        "submitted_by_name": _user_name(ctx), "submitted_at": ctx.at, "sent_back": None, "report_versions": seq})
    await _keep_version(ctx, doc, seq, "submit", content)
    ctx.event("report.submitted", doc, reader_id=ctx.actor.user_id, reader_name=_user_name(ctx),
              critical=content["critical"], version=seq)
    await ctx.audit("report.submit", f"reading/{doc['id']}", doc["organization"], critical=content["critical"],
                    version=seq)
    return doc


def _check_reviewer(ctx: _Ctx, doc: Doc, action: str) -> None:
    model.require(doc["state"], action)
    _may_review(ctx, doc["centre"], doc["kind"], doc.get("submitted_by"), "a report")


def _may_review(ctx: _Ctx, centre_id: str, kind: str, author: str | None, what: str) -> None:
    """The caller's title reaches ``centre_id``'s sign_off for ``kind`` (per centre: a reader of
    several may review at one and not another), and he is not the author."""
    user = ctx.rt.consortium.users.get(ctx.actor.user_id)
    centre = ctx.rt.consortium.centres[centre_id]
    title = user.title if user else None
    if not centre.releases(kind, title):
        raise Forbidden(f"reviewing (审核) {kind} reports at {centre.id} needs the title "
                        f"{centre.sign_off.get(kind)} or above; yours is {title or 'not recorded'}")
    if author == ctx.actor.user_id:
        raise Forbidden(f"the author of {what} may not review it himself")


async def _review(ctx: _Ctx, cmd: c.Review) -> Doc:
    action = "countersign" if cmd.release else "review"
    doc = await _visible_request(ctx, cmd.request_id, "review")
    if not isinstance(cmd.release, bool):
        raise Invalid("release must be true or false")
    _check_reviewer(ctx, doc, action)
    content = await _content(ctx, doc, cmd, doc.get("draft"))
    seq = _next_version(doc)
    if not cmd.release:
        if not content["critical"] and content["critical_category"]:
            raise Invalid("critical_category is only allowed with critical=true")
        doc = await _apply(ctx, doc, "review", {"draft": {**content, "saved_at": ctx.at, "by": ctx.actor.user_id},
                                                "report_versions": seq})
        await _keep_version(ctx, doc, seq, "review", content)
        ctx.event("report.reviewed", doc, reviewer_id=ctx.actor.user_id, version=seq)
        await ctx.audit("report.review", f"reading/{doc['id']}", doc["organization"], version=seq)
        return doc
    _check_report(content)
    author = doc["submitted_by"]
    signers = [_signer(ctx, author, "reporting", doc["submitted_at"], doc["centre"]),
               _signer(ctx, ctx.actor.user_id, "reviewing", ctx.at, doc["centre"])]
    report = await _new_report(ctx, doc, content, author=author, signers=signers, version=seq)
    await ctx.tx.insert("reports", report)
    doc = await _apply(ctx, doc, "countersign", {"report_id": report["id"], "signed_at": ctx.at,
                                                 "signed_by": ctx.actor.user_id, "report_versions": seq})
    await _keep_version(ctx, doc, seq, "countersign", content, report_id=report["id"])
    _emit_report(ctx, report, doc)
    await ctx.audit("report.sign", f"report/{report['id']}", doc["organization"], request_id=doc["id"],
                    critical=content["critical"], critical_category=content["critical_category"], version=seq,
                    author=author, reviewer=ctx.actor.user_id)
    await quality.on_released(ctx, report)
    return doc


async def _send_back(ctx: _Ctx, cmd: c.SendBack) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "send_back")
    comment = _text(cmd.comment, "comment", limit=4000)
    _check_reviewer(ctx, doc, "send_back")
    author = doc["submitted_by"]
    user = ctx.rt.consortium.users.get(author)
    until = _lease_until(ctx)
    seq = _next_version(doc)
    sent_back = {"comment": comment, "by": ctx.actor.user_id, "by_name": _user_name(ctx), "at": ctx.at}
    doc = await _apply(ctx, doc, "send_back", {
        "claimed_by": author, "claimed_by_name": user.name if user else author, "claimed_at": ctx.at,
        "lease_expires_at": until, "sent_back": sent_back, "report_versions": seq})
    content = {k: (doc.get("draft") or {}).get(k) for k in REPORT_CONTENT}
    await _keep_version(ctx, doc, seq, "send_back", content, comment=comment)
    ctx.event("report.sent_back", doc, reader_id=author, reviewer_id=ctx.actor.user_id, comment=comment,
              lease_expires_at=until)
    await ctx.audit("report.send_back", f"reading/{doc['id']}", doc["organization"], author=author, version=seq)
    return doc


async def _visible_report(ctx: _Ctx, report_id: Any, action: str) -> tuple[Doc, Doc]:
    """The report (and its reading request) the caller may see and act on with ``action``."""
    original = await ctx.tx.get("reports", report_id) if isinstance(report_id, str) else None
    if original is None or not policy.sees_report(ctx.actor, original):
        raise NotFound(f"no report {report_id!r}")
    if not policy.may(ctx.actor, action):
        raise Forbidden(f"a {ctx.actor.role} may not {action.replace('_', ' ')} a report")
    return original, await ctx.tx.get(RR, original["request_id"])


async def _addendum(ctx: _Ctx, cmd: c.Addendum) -> Doc:
    """An addendum: released at once, or, by a reader below the centre's sign_off, submitted for review
    (the clinic sees nothing until a reviewer countersigns it); returns the addendum, or the request."""
    original, request = await _visible_report(ctx, cmd.report_id, "addendum")
    text = _text(cmd.text, "text")
    if request.get("pending_addendum"):
        raise Conflict(f"an addendum to report {request['pending_addendum']['report_id']} waits for review; "
                       "it is countersigned or sent back first")
    user = ctx.rt.consortium.users.get(ctx.actor.user_id)
    centre = ctx.rt.consortium.centres.get(original.get("centre") or "")
    if centre is not None and not centre.releases(original["kind"], user.title if user else None):
        return await _submit_addendum(ctx, original, request, text)
    return await write_addendum(ctx, original, text)


async def write_addendum(ctx: _Ctx, original: Doc, text: str) -> Doc:
    """A new report correcting ``original`` by the actor, released at once and delivered like it
    (``report.signed``): a lead upholding a peer review (docs/quality.md).  The caller checked who may."""
    request = await ctx.tx.get(RR, original["request_id"])
    signers = [_signer(ctx, ctx.actor.user_id, "reporting", ctx.at, original.get("centre"))]
    return await _release_addendum(ctx, original, request, text, author=ctx.actor.user_id, signers=signers,
                                   action="addendum")


async def _release_addendum(ctx: _Ctx, original: Doc, request: Doc, text: str, *, author: str,
                            signers: list[Doc], action: str) -> Doc:
    user = ctx.rt.consortium.users.get(author)
    reviewer = next((s for s in signers if s["role"] == "reviewing"), None)
    report = {**{k: original.get(k) for k in ("request_id", "study_uid", "organization", "centre", "kind",
                                               "modality", "patient_id", "patient_name", "accession_number",
                                               "clinical_question", "impression", "critical",
                                               "critical_category", "template_id", "template_version", "fields",
                                               "structured", *CARRIED)},
              "id": f"rp-{uuid.uuid4().hex[:20]}", "reader_id": author, "reader_name": user.name if user else author,
              "signed_at": ctx.at, "findings": text, "text": text, "addendum_of": original["id"], "addenda": [],
              "signers": signers, "reviewer_id": reviewer["id"] if reviewer else None,
              "reviewer_name": reviewer["name"] if reviewer else None}
    seq = _next_version(request)
    report["version"] = seq
    await ctx.tx.insert("reports", report)
    # The original stays immutable; only its list of addenda (a link) grows.
    await ctx.tx.update("reports", original["id"], {"addenda": [*original.get("addenda", []), report["id"]]})
    request = await _apply(ctx, request, action, {"addenda": [*request.get("addenda", []), report["id"]],
                                                  "report_versions": seq, "pending_addendum": None})
    await _keep_version(ctx, request, seq, "addendum" if action == "addendum" else "addendum_countersign",
                        {"addendum": text}, report_id=report["id"])
    _emit_report(ctx, report, request)
    await ctx.audit("report.addendum", f"report/{report['id']}", report["organization"],
                    addendum_of=original["id"], request_id=request["id"],
                    **({"author": author, "reviewer": reviewer["id"]} if reviewer else {}))
    await quality.sample(ctx, original, "addendum")  # the corrected report goes to peer review (docs/quality.md)
    return report


async def _submit_addendum(ctx: _Ctx, original: Doc, request: Doc, text: str) -> Doc:
    seq = _next_version(request)
    pending = {"report_id": original["id"], "text": text, "by": ctx.actor.user_id, "by_name": _user_name(ctx),
               "at": ctx.at}
    request = await _apply(ctx, request, "submit_addendum", {"pending_addendum": pending, "addendum_sent_back": None,
                                                             "report_versions": seq})
    await _keep_version(ctx, request, seq, "addendum_submit", {"addendum": text})
    ctx.event("report.submitted", request, reader_id=ctx.actor.user_id, reader_name=_user_name(ctx),
              critical=bool(original.get("critical")), version=seq, addendum_of=original["id"])
    await ctx.audit("report.addendum_submit", f"report/{original['id']}", original["organization"],
                    request_id=request["id"], version=seq)
    return request


async def _pending_addendum(ctx: _Ctx, report_id: Any, action: str) -> tuple[Doc, Doc, Doc]:
    """The report, its request and the junior's addendum waiting on it; the caller may review it."""
    original, request = await _visible_report(ctx, report_id, "review_addendum")
    pending = request.get("pending_addendum")
    if not pending or pending.get("report_id") != original["id"]:
        raise Conflict(f"no addendum to report {original['id']} waits for review")
    _may_review(ctx, original["centre"], original["kind"], pending["by"], "an addendum")
    model.require(request["state"], action)
    return original, request, pending


async def _review_addendum(ctx: _Ctx, cmd: c.ReviewAddendum) -> Doc:
    if not isinstance(cmd.release, bool):
        raise Invalid("release must be true or false")
    original, request, pending = await _pending_addendum(
        ctx, cmd.report_id, "countersign_addendum" if cmd.release else "review_addendum")
    text = pending["text"] if cmd.text is None else _text(cmd.text, "text")
    if cmd.release:
        signers = [_signer(ctx, pending["by"], "reporting", pending["at"], original.get("centre")),
                   _signer(ctx, ctx.actor.user_id, "reviewing", ctx.at, original.get("centre"))]
        return await _release_addendum(ctx, original, request, text, author=pending["by"], signers=signers,
                                       action="countersign_addendum")
    seq = _next_version(request)
    request = await _apply(ctx, request, "review_addendum", {"pending_addendum": {**pending, "text": text},
                                                             "report_versions": seq})
    await _keep_version(ctx, request, seq, "addendum_review", {"addendum": text})
    ctx.event("report.reviewed", request, reviewer_id=ctx.actor.user_id, version=seq, addendum_of=original["id"])
    await ctx.audit("report.addendum_review", f"report/{original['id']}", original["organization"],
                    request_id=request["id"], version=seq)
    return request


async def _send_back_addendum(ctx: _Ctx, cmd: c.SendBackAddendum) -> Doc:
    comment = _text(cmd.comment, "comment", limit=4000)
    original, request, pending = await _pending_addendum(ctx, cmd.report_id, "send_back_addendum")
    seq = _next_version(request)
    sent_back = {"report_id": original["id"], "text": pending["text"], "author": pending["by"], "comment": comment,
                 "by": ctx.actor.user_id, "by_name": _user_name(ctx), "at": ctx.at}
    request = await _apply(ctx, request, "send_back_addendum", {"pending_addendum": None,
                                                                "addendum_sent_back": sent_back,
                                                                "report_versions": seq})
    await _keep_version(ctx, request, seq, "addendum_send_back", {"addendum": pending["text"]}, comment=comment)
    ctx.event("report.sent_back", request, reader_id=pending["by"], reviewer_id=ctx.actor.user_id, comment=comment,
              addendum_of=original["id"])
    await ctx.audit("report.addendum_send_back", f"report/{original['id']}", original["organization"],
                    request_id=request["id"], author=pending["by"], version=seq)
    return request


async def _escalate(ctx: _Ctx, cmd: c.Escalate) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "escalate")
    _check_holder(ctx, doc, "escalate")
    reason = _text(cmd.reason, "reason", limit=2000)
    upper = ctx.rt.consortium.centres[doc["centre"]].escalation
    if upper is None:
        raise Invalid(f"centre {doc['centre']} has no escalation centre configured")
    linked = new_request(ctx.rt.consortium, id=f"rr-{uuid.uuid4().hex[:20]}", study_uid=doc["study_uid"],
                         organization=doc["organization"], kind=doc["kind"], priority=doc["priority"],
                         clinical_question=doc["clinical_question"], green_channel=doc["green_channel"],
                         signed_resident=doc["signed_resident"], source="escalation",
                         requested_by=ctx.actor.user_id, at=ctx.at, study=doc)
    # The lower centre's draft is shown, not inherited: Sign() must not default to another reader's words.
    linked.update(escalated_from=doc["id"], escalation_reason=reason, escalated_draft=doc.get("draft"))
    doc = await _apply(ctx, doc, "escalate", {"escalated_to": linked["id"], "escalation_reason": reason})
    await ctx.tx.insert(RR, linked)
    ctx.event("reading.escalated", doc, to_centre=upper, escalated_to=linked["id"], reason=reason,
              reader_id=ctx.actor.user_id)
    await ctx.audit("reading.escalate", f"reading/{doc['id']}", doc["organization"], to_centre=upper,
                    escalated_to=linked["id"], reason=reason)
    ctx.event("reading.requested", linked, source="escalation", escalated_from=doc["id"],
              clinical_question=linked["clinical_question"], green_channel=linked["green_channel"],
              signed_resident=linked["signed_resident"], waiting=False)
    study = await ctx.tx.get("studies", doc["study_uid"]) or {"modalities": [doc["modality"]] if doc.get("modality") else []}
    await _route_and_queue(ctx, linked, study, centres=[upper])
    return doc


async def _return(ctx: _Ctx, cmd: c.ReturnForRescan) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "return")
    if cmd.reason_code not in c.RETURN_REASONS:
        raise Invalid(f"reason_code must be one of {', '.join(c.RETURN_REASONS)}, not {cmd.reason_code!r}")
    comment = _text(cmd.comment, "comment", required=False, limit=2000)
    _check_holder(ctx, doc, "return")
    if cmd.reason_code == "image_quality":
        # A re-scan for image quality is one outcome of grading: the study is graded 废片 with its reasons
        return await quality.grade(ctx, doc, quality.reject_code(ctx.rt.consortium),
                                   list(cmd.quality_reasons) or ["other"], comment)
    return await return_for_rescan(ctx, doc, cmd.reason_code, comment)


async def return_for_rescan(ctx: _Ctx, doc: Doc, reason_code: str, comment: str) -> Doc:
    """claimed|draft -> returned, with its event (the clinic's re-scan notice) and audit record."""
    returned = {"reason_code": reason_code, "comment": comment, "by": ctx.actor.user_id, "at": ctx.at}
    doc = await _apply(ctx, doc, "return", {"return": returned})
    ctx.event("reading.returned", doc, reason_code=reason_code, comment=comment, reader_id=ctx.actor.user_id,
              patient_id=doc.get("patient_id"), patient_name=doc.get("patient_name"))
    await ctx.audit("reading.return", f"reading/{doc['id']}", doc["organization"], reason_code=reason_code)
    return doc


async def _move(ctx: _Ctx, cmd: c.MoveToCentre) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "move")
    reason = _text(cmd.reason, "reason", limit=2000)
    target = ctx.rt.consortium.centres.get(cmd.centre) if isinstance(cmd.centre, str) else None
    if target is None:
        raise Invalid(f"no reading centre {cmd.centre!r}")
    if doc["kind"] not in target.kinds:
        raise Invalid(f"centre {target.id} does not read {doc['kind']}")
    model.require(doc["state"], "move")
    if target.id == doc["centre"]:
        raise Invalid(f"reading request {doc['id']} is already at centre {target.id}")
    move = {"from": doc["centre"], "to": target.id, "reason": reason, "by": ctx.actor.user_id, "at": ctx.at,
            "manual": True}
    doc = await _apply(ctx, doc, "move", {"centre": target.id, "moves": [*doc.get("moves", []), move]})
    ctx.event("reading.moved", doc, from_centre=move["from"], to_centre=target.id, reason=reason, manual=True)
    await ctx.audit("reading.move", f"reading/{doc['id']}", doc["organization"], from_centre=move["from"],
                    to_centre=target.id, reason=reason)
    return doc


async def _assign(ctx: _Ctx, cmd: c.AssignToReader) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "assign")
    reason = _text(cmd.reason, "reason", limit=2000)
    if not isinstance(cmd.reader_id, str) or not cmd.reader_id.strip():
        raise Invalid("reader_id must be a user id")
    reader = ctx.rt.consortium.users.get(cmd.reader_id)
    if reader is None:
        raise Invalid(f"no user {cmd.reader_id!r}")
    if reader.role != "reader":
        raise Invalid(f"user {reader.id} is a {reader.role}, not a reader")
    if not reader.reads_for(doc["centre"]):
        raise Invalid(f"reader {reader.id} reads for centre{'s' if len(reader.centres) > 1 else ''} "
                      f"{', '.join(reader.centres)}, not {doc['centre']}; "
                      "move the task to that centre first")
    model.require(doc["state"], "assign")
    previous = doc.get("claimed_by") if doc["state"] in model.HELD_STATES else None
    if previous == reader.id:
        raise Invalid(f"reader {reader.id} already holds reading request {doc['id']}")
    # A fresh lease exactly like a claim; the draft (if any) stays with the request.
    until = _lease_until(ctx)
    doc = await _apply(ctx, doc, "assign", {"claimed_by": reader.id, "claimed_by_name": reader.name,
                                            "claimed_at": ctx.at, "lease_expires_at": until})
    ctx.event("reading.assigned", doc, reader_id=reader.id, previous_holder=previous,
              assigned_by=ctx.actor.user_id, reason=reason, lease_expires_at=until)
    await ctx.audit("reading.assign", f"reading/{doc['id']}", doc["organization"], reader_id=reader.id,
                    previous_holder=previous, reason=reason, lease_expires_at=until)
    return doc


_HANDLERS = {c.RequestReading: _request, c.CancelReading: _cancel, c.Claim: _claim, c.RenewLease: _renew,
             c.Release: _release, c.SaveDraft: _save_draft, c.Sign: _sign, c.Review: _review,
             c.SendBack: _send_back, c.Addendum: _addendum, c.ReviewAddendum: _review_addendum,
             c.SendBackAddendum: _send_back_addendum,
             c.Escalate: _escalate, c.ReturnForRescan: _return, c.MoveToCentre: _move,
             c.AssignToReader: _assign}


# --- event handlers and the sweeper -------------------------------------------------------

def site_rule_request_id(study_uid: str, kind: str) -> str:
    """Deterministic, so a redelivered or re-announced study never creates a second request."""
    return "rr-auto-" + hashlib.sha256(f"{study_uid}|{kind}".encode()).hexdigest()[:20]


async def on_study_received(rt: Runtime, event: Event) -> None:
    """Apply site rules and queue the requests that waited for this study.  Idempotent."""
    async with rt.store.transaction() as tx:
        if not await tx.first_time("workflow", event.id):
            return
        ctx = _Ctx(rt, tx, SYSTEM, None, settings_of(rt).now(), event.traceparent)
        data = event.data
        study = await tx.get("studies", data["study_uid"]) or {
            "id": data["study_uid"], "organization": data["organization"], "modalities": data.get("modalities") or [],
            "patient_id": data.get("patient_id"), "patient_name": data.get("patient_name"),
            "accession_number": data.get("accession_number")}
        study.setdefault("modalities", data.get("modalities") or [])
        organization = study["organization"]
        await orders.on_study_received(ctx, study)  # before site rules: the order's request, not a rule's
        modalities = set(study.get("modalities") or [])
        for rule in rt.consortium.site_rules:
            if rule.organization != organization or (rule.modalities and not modalities & set(rule.modalities)):
                continue
            rid = site_rule_request_id(study["id"], rule.kind)
            if await tx.get(RR, rid) is not None or await tx.find(
                    RR, {"study_uid": study["id"], "kind": rule.kind, "organization": organization,
                         "state": {"$in": list(model.OPEN_STATES)}}, limit=1):
                continue  # already created (earlier revision) or the clinic asked explicitly (not another one)
            doc = new_request(rt.consortium, id=rid, study_uid=study["id"], organization=organization,
                              kind=rule.kind, priority=rule.priority,
                              clinical_question=f"site rule: every {rule.kind} of {organization}",
                              green_channel=None, signed_resident=False, source="site_rule",
                              requested_by="system:workflow", at=ctx.at, study=study)
            await tx.insert(RR, doc)
            ctx.event("reading.requested", doc, source="site_rule", clinical_question=doc["clinical_question"],
                      green_channel=None, signed_resident=False, waiting=False)
            await ctx.audit("reading.request", f"reading/{rid}", organization, study_uid=study["id"],
                            kind=rule.kind, priority=rule.priority, site_rule=True)
        for doc in await tx.find(RR, {"study_uid": study["id"], "state": "requested"}, sort=(("requested_at", 1),)):
            if doc["organization"] != organization:
                # Asked for by a clinic that does not own the study: never queued, and left waiting
                # like a request for a study that never arrives (cancelling it now would tell the clinic
                # that the Study UID exists elsewhere); expire_waiting cancels both alike.
                continue
            try:
                await _route_and_queue(ctx, doc, study)
            except Invalid as exc:
                # No centre reads it (configuration gap): keep the request, say why, and let the other
                # requests of this study proceed; an admin fixes the routes and moves it.
                log.warning("reading request cannot be routed", extra={"request_id": doc["id"], "reason": str(exc)})
                await tx.update(RR, doc["id"], {"routing_error": str(exc)})


async def expire_leases(rt: Runtime) -> int:
    """Return every task whose lease has expired to its queue; how many were returned."""
    now = settings_of(rt).now()
    due = await rt.store.find(RR, {"state": {"$in": list(model.HELD_STATES)}, "lease_expires_at": {"$lt": iso(now)}},
                              sort=(("lease_expires_at", 1),), limit=500)
    returned = 0
    for stale in due:
        async with rt.store.transaction() as tx:
            ctx = _Ctx(rt, tx, SYSTEM, None, now, new_traceparent())
            doc = await tx.get(RR, stale["id"])
            if doc is None or doc["state"] not in model.HELD_STATES or (doc.get("lease_expires_at") or "") >= ctx.at:
                continue  # renewed or finished meanwhile
            held_by = doc.get("claimed_by")
            doc = await _apply(ctx, doc, "expire_lease")
            ctx.event("reading.lease_expired", doc, reader_id=held_by)
            await ctx.audit("reading.lease_expire", f"reading/{doc['id']}", doc["organization"], reader_id=held_by)
            returned += 1
    return returned


async def expire_waiting(rt: Runtime) -> int:
    """Cancel the requests that waited ``wait_seconds`` for a study of their own organisation; how many.

    The same for a Study UID that never arrived and one that arrived from another organisation
    (which is never queued), so the answer says nothing about other organisations' studies."""
    settings = settings_of(rt)
    now = settings.now()
    due = await rt.store.find(RR, {"state": "requested", "requested_at": {"$lt": iso(now - settings.wait_seconds)}},
                              sort=(("requested_at", 1),), limit=500)
    cancelled = 0
    for stale in due:
        async with rt.store.transaction() as tx:
            ctx = _Ctx(rt, tx, SYSTEM, None, now, new_traceparent())
            doc = await tx.get(RR, stale["id"])
            if doc is None or doc["state"] != "requested":
                continue
            study = await tx.get("studies", doc["study_uid"])
            if _arrived(study) and study["organization"] == doc["organization"]:
                continue  # its study is here: unroutable (routing_error) or about to be queued, not waiting
            days = settings.wait_seconds / 86400
            reason = f"no study {doc['study_uid']} arrived from {doc['organization']} within {days:g} days"
            doc = await _apply(ctx, doc, "cancel", {"cancellation": {"reason": reason, "by": SYSTEM.user_id,
                                                                     "at": ctx.at}})
            ctx.event("reading.cancelled", doc, reason="study_not_received")
            await ctx.audit("reading.cancel", f"reading/{doc['id']}", doc["organization"], reason="study_not_received")
            cancelled += 1
    return cancelled


async def flag_sla_risks(rt: Runtime) -> int:
    """Flag open tasks past ``sla_risk_fraction`` of their SLA (``reading.sla_at_risk``, once each), and
    at once those of a rostered centre with nobody on duty until after their deadline."""
    now = settings_of(rt).now()
    due = await rt.store.find(RR, {"state": {"$in": list(model.WORKLIST_STATES)}, "sla_at_risk": False,
                                   "sla_risk_at": {"$lt": iso(now)}}, sort=(("sla_risk_at", 1),), limit=500)
    due += await _uncovered(rt, iso(now))
    flagged = 0
    for stale in due:
        async with rt.store.transaction() as tx:
            doc = await tx.get(RR, stale["id"])
            if doc is None or doc.get("sla_at_risk") or doc["state"] not in model.WORKLIST_STATES:
                continue
            if not await tx.update(RR, doc["id"], {"sla_at_risk": True}, where={"version": doc["version"]}):
                continue
            ctx = _Ctx(rt, tx, SYSTEM, None, now, new_traceparent())
            ctx.event("reading.sla_at_risk", {**doc, "sla_at_risk": True}, deadline=doc["deadline"])
            flagged += 1
    return flagged


async def _uncovered(rt: Runtime, at: str) -> list[Doc]:
    """Open tasks not yet at risk whose centre has a roster, nobody on duty now, and no day or night
    shift starting before their deadline: nobody will read them in time (a gap in the roster)."""
    out: list[Doc] = []
    for centre in rt.consortium.centres:
        if not await rosters.has_roster(rt.store, centre) or \
                await rosters.readers_on_duty(rt.store, rt.consortium, centre, at):
            continue
        back = await rosters.next_capacity_start(rt.store, centre, at)
        where: Doc = {"centre": centre, "on_worklist": True, "sla_at_risk": False}
        if back is not None:
            where["deadline"] = {"$lt": back}
        out += await rt.store.find(RR, where, sort=(("deadline", 1),), limit=500)
    return out


# Exam requests (services/workflow/orders) run through the same execute; imported last, as they
# build on this module's reading-request helpers.
from .orders import service as orders  # noqa: E402
from .quality import service as quality  # noqa: E402  (image quality and peer review)

_HANDLERS.update(orders.HANDLERS)
_HANDLERS.update(quality.HANDLERS)
_HANDLERS[rosters.SetRoster] = rosters.set_roster  # duty rosters (排班管理)
