"""Command and event handlers of exam requests (申请管理).

The API's commands (:class:`~.commands.CreateOrder`, ``ChangeOrder``, ``CancelOrder``) run
through the workflow's one :func:`services.workflow.service.execute` (role, scope, one
transaction with the ``order.*`` event and the audit record).  The gateway's Modality
Performed Procedure Step reports (``procedure_step.reported``) move the order; MPPS COMPLETED,
or the study's quiet period (``study.received``) when the modality sends no MPPS, links the
study and creates the reading request from the order, with no click.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from typing import Any

from ...core.consortium import GREEN_CHANNELS, KINDS, PRIORITIES
from ...core.events import Event
from ...core.localtime import utc
from ...core.runtime import Runtime
from ...core.store.port import Transaction
from ..context import settings_of
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..leases import iso
from ..service import CARRIED as ORDER_CARRIED
from ..service import RR, SYSTEM, _Ctx, _route_and_queue, _text, new_request, record_class
from . import commands as c
from .. import recognition
from . import identity, model

log = logging.getLogger("yilian.workflow.orders")

ORDERS = "orders"
ROLES = ("clinic", "admin")  # who creates, changes and cancels orders
GROUP = "orders"  # the bus consumer group of procedure_step.reported
MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")  # CS
DATE = re.compile(r"^\d{8}$")
SEXES = ("M", "F", "O")
Doc = dict[str, Any]


def sees(actor, doc: Doc) -> bool:
    if actor.role == "admin":
        return True
    return actor.role == "clinic" and doc.get("organization") == actor.organization


def _event(ctx: _Ctx, type: str, doc: Doc, **data: Any) -> Event:
    body = {"order_id": doc["id"], "organization": doc["organization"], "state": doc["state"],
            "accession_number": doc["accession_number"], "kind": doc["kind"], "modality": doc["modality"],
            "priority": doc["priority"], "station_ae": doc.get("station_ae"), "scheduled_at": doc["scheduled_at"],
            "actor": ctx.actor.user_id, **data}
    return ctx.emit(f"order.{type}", doc["id"], body)


async def _audit(ctx: _Ctx, action: str, doc: Doc, **detail: Any) -> None:
    await ctx.record(f"order.{action}", f"order/{doc['id']}", doc["organization"], **detail)


async def _apply(ctx: _Ctx, doc: Doc, action: str, changes: Doc | None = None) -> Doc:
    update = model.transition(doc, action, at=ctx.at, by=ctx.actor.user_id, changes=changes)
    if not await ctx.tx.update(ORDERS, doc["id"], update, where={"version": doc.get("version", 0)}):
        raise Conflict(f"order {doc['id']} changed concurrently; reload and try again")
    return {**doc, **update}


async def _visible(ctx: _Ctx, order_id: str) -> Doc:
    doc = await ctx.tx.get(ORDERS, order_id) if isinstance(order_id, str) else None
    if doc is None or not sees(ctx.actor, doc):
        raise NotFound(f"no order {order_id!r}")
    if ctx.actor.role not in ROLES:
        raise Forbidden(f"a {ctx.actor.role} may not change orders")
    return doc


# --- values ------------------------------------------------------------------------------

def _short(value: Any, what: str, limit: int, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    text = _text(value, what, limit=limit)
    if "\\" in text:
        raise Invalid(f"{what} must not contain a backslash (the DICOM value separator)")
    return text.strip()


def _checked(ctx: _Ctx, organization: str, values: Doc) -> Doc:
    """The order fields of ``values`` (a create's, or a change's subset), checked; Invalid names the first
    wrong one."""
    out: Doc = {}
    for key, value in values.items():
        if key == "patient_id":
            out[key] = _short(value, "patient_id", 64)
        elif key == "patient_name":
            out[key] = _short(value, "patient_name", 64 * 3)
        elif key == "kind":
            if value not in KINDS:
                raise Invalid(f"kind must be one of {', '.join(KINDS)}, not {value!r}")
            out[key] = value
        elif key == "modality":
            if not isinstance(value, str) or not MODALITY.match(value):
                raise Invalid(f"modality must be a DICOM modality code such as CT, DX, US, ECG, not {value!r}")
            out[key] = value
        elif key == "priority":
            if value not in PRIORITIES:
                raise Invalid(f"priority must be one of {', '.join(PRIORITIES)}, not {value!r}")
            out[key] = value
        elif key == "green_channel":
            if value is not None and value not in GREEN_CHANNELS:
                raise Invalid(f"green_channel must be one of {', '.join(GREEN_CHANNELS)}, not {value!r}")
            out[key] = value
        elif key in ("signed_resident", "remote_reading"):
            if not isinstance(value, bool):
                raise Invalid(f"{key} must be true or false")
            out[key] = value
        elif key == "resident_id":
            if value is not None:
                why = identity.problem(value) if isinstance(value, str) else "must be a string"
                if why:  # the number itself is never repeated (errors reach the audit log)
                    raise Invalid(f"resident_id (居民身份证号) {why}")
                value = identity.normalized(value)
            out[key] = value
        elif key == "sex":
            if value is not None and value not in SEXES:
                raise Invalid(f"sex must be one of {', '.join(SEXES)}, not {value!r}")
            out[key] = value
        elif key == "birth_date":
            if value is not None and (not isinstance(value, str) or not DATE.match(value)):
                raise Invalid(f"birth_date must be a DICOM date YYYYMMDD, not {value!r}")
            out[key] = value
        elif key == "clinical_question":
            out[key] = _text(value, "clinical_question", limit=4000)
        elif key == "requesting_physician":
            out[key] = _short(value, "requesting_physician", 64 * 3)
        elif key == "requesting_department":
            out[key] = _short(value, key, 64, required=False)  # DICOM Requesting Service is LO
        elif key == "record_class":
            out[key] = record_class(ctx.rt.consortium, value)
        elif key in ("body_part", "procedure_code"):
            out[key] = _short(value, key, 16, required=False)
        elif key == "procedure_description":
            out[key] = _short(value, key, 64, required=False)
        elif key == "station_ae":
            org = ctx.rt.consortium.organizations[organization]
            if value is not None and value not in org.modality_aes:
                raise Invalid(f"station_ae {value!r} is not a modality AE title of {organization} "
                              f"({', '.join(org.modality_aes) or 'none registered'})")
            out[key] = value
        elif key == "scheduled_at":
            try:
                when = utc(value) if isinstance(value, str) else None
            except ValueError:
                when = None
            if when is None:
                raise Invalid(f"scheduled_at must be an ISO 8601 date-time with an offset, not {value!r}")
            out[key] = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
            local = ctx.rt.local_time.dicom(when)
            out["scheduled_date"], out["scheduled_time"] = local.date, local.time.split(".")[0]
        else:
            raise Invalid(f"unknown order field {key!r}")
    return out


# --- command handlers ----------------------------------------------------------------------

async def _create(ctx: _Ctx, cmd: c.CreateOrder) -> Doc:
    if ctx.actor.role not in ROLES:
        raise Forbidden(f"a {ctx.actor.role} may not create orders")
    if ctx.actor.role == "clinic":
        if cmd.organization not in (None, ctx.actor.organization):
            raise Invalid("a clinic creates orders for its own organisation only")
        organization = ctx.actor.organization
    else:
        organization = cmd.organization
        if organization not in ctx.rt.consortium.organizations:
            raise Invalid(f"organization must name a consortium organisation, not {organization!r}")
    fields = {k: getattr(cmd, k) for k in model.CHANGEABLE}
    fields["kind"] = cmd.kind
    values = _checked(ctx, organization, fields)
    accession = model.accession_number()
    oid = f"ord-{uuid.uuid4().hex[:20]}"
    # 结果互认: a still-valid recognised result of this exam holds the order for a reason code.
    decision = await recognition.gate(
        ctx, subject=f"order/{oid}", organization=organization, patient_id=values.get("patient_id"),
        identity=identity.key(identity.ISSUER, values["resident_id"]) if values.get("resident_id") else None,
        modality=values.get("modality"), body_part=values.get("body_part"), recognition=cmd.recognition)
    doc = {
        "id": oid, "organization": organization, "state": "scheduled", "on_worklist": True,
        **values,
        "accession_number": accession, "requested_procedure_id": accession,
        "scheduled_step_id": "SPS" + accession[2:], "study_instance_uid": model.study_instance_uid(),
        "created_by": ctx.actor.user_id, "created_at": ctx.at, "study_uid": None, "linked_at": None,
        "performed_steps": [], "performed_at": None, "request_id": None, "demographic_mismatches": [],
        "cancellation": None, "recognition": decision, "version": 0, "updated_at": ctx.at,
        "history": [{"action": "create", "state": "scheduled", "at": ctx.at, "by": ctx.actor.user_id}],
    }
    await ctx.tx.insert(ORDERS, doc)
    _event(ctx, "created", doc, remote_reading=doc["remote_reading"])
    await _audit(ctx, "create", doc, accession_number=accession, kind=doc["kind"], modality=doc["modality"])
    return doc


async def _change(ctx: _Ctx, cmd: c.ChangeOrder) -> Doc:
    doc = await _visible(ctx, cmd.order_id)
    if not isinstance(cmd.changes, dict) or not cmd.changes:
        raise Invalid("changes must name at least one field")
    wrong = sorted(set(cmd.changes) - set(model.CHANGEABLE))
    if wrong:
        raise Invalid(f"field(s) {', '.join(wrong)} cannot be changed")
    model.require(doc["state"], "change")
    values = _checked(ctx, doc["organization"], dict(cmd.changes))
    changed = sorted(k for k in cmd.changes if doc.get(k) != values.get(k))  # names only, never values
    doc = await _apply(ctx, doc, "change", values)
    _event(ctx, "changed", doc, fields=changed)
    await _audit(ctx, "change", doc, fields=changed, reason=cmd.reason or None)
    return doc


async def _cancel(ctx: _Ctx, cmd: c.CancelOrder) -> Doc:
    doc = await _visible(ctx, cmd.order_id)
    reason = _text(cmd.reason, "reason", limit=2000)
    doc = await _apply(ctx, doc, "cancel", {"cancellation": {"reason": reason, "by": ctx.actor.user_id,
                                                             "at": ctx.at}})
    _event(ctx, "cancelled", doc, reason=reason)
    await _audit(ctx, "cancel", doc, reason=reason)
    return doc


HANDLERS = {c.CreateOrder: _create, c.ChangeOrder: _change, c.CancelOrder: _cancel}


# --- the study and the reading request ---------------------------------------------------------

def request_id_for(order_id: str) -> str:
    """Deterministic: a redelivered MPPS or a re-announced study never creates a second request."""
    return "rr-order-" + hashlib.sha256(order_id.encode()).hexdigest()[:20]


async def _link(ctx: _Ctx, order: Doc, study: Doc) -> Doc:
    """Record the study on the order and flag the demographics that differ (never overwritten)."""
    if order.get("study_uid") == study["id"]:
        return order
    flags = model.mismatches(order, study)
    order = await _apply(ctx, order, "link", {"study_uid": study["id"], "linked_at": ctx.at,
                                              "demographic_mismatches": flags})
    if order.get("resident_id") and not study.get("identity"):
        # The modality may not carry Other Patient IDs: the order's resident ID gives the study its
        # consortium identity (docs/identity.md), for priors across sites.
        if found := identity.key(identity.ISSUER, order["resident_id"]):
            await ctx.tx.update("studies", study["id"], {"identity": found})
            study = {**study, "identity": found}
    _event(ctx, "study_linked", order, study_uid=study["id"], mismatched_fields=[f["field"] for f in flags])
    await _audit(ctx, "link", order, study_uid=study["id"], mismatched_fields=[f["field"] for f in flags])
    return order


async def _reading_request(ctx: _Ctx, order: Doc, study_uid: str, study: Doc | None) -> Doc | None:
    """The order's reading request (created once, state ``requested``); ``None`` if none is wanted."""
    if not order.get("remote_reading"):
        return None
    rid = request_id_for(order["id"])
    existing = await ctx.tx.get(RR, rid)
    if existing is not None:
        if existing["state"] == "requested" and existing["study_uid"] != study_uid:
            # The modality used its own Study Instance UID: the request follows the study that came.
            await ctx.tx.update(RR, rid, {"study_uid": study_uid})
            existing = {**existing, "study_uid": study_uid}
        return existing
    doc = new_request(ctx.rt.consortium, id=rid, study_uid=study_uid, organization=order["organization"],
                      kind=order["kind"], priority=order["priority"], clinical_question=order["clinical_question"],
                      green_channel=order.get("green_channel"), signed_resident=order.get("signed_resident", False),
                      source="order", requested_by=order["created_by"], at=ctx.at, study=study)
    doc.update({k: order[k] for k in ORDER_CARRIED if order.get(k)})  # the order's say wins over the study's
    doc.update(order_id=order["id"], accession_number=order["accession_number"],
               order_patient={k: order.get(k) for k in model.DEMOGRAPHICS},
               demographic_mismatches=order.get("demographic_mismatches") or [])
    await ctx.tx.insert(RR, doc)
    ctx.event("reading.requested", doc, source="order", clinical_question=doc["clinical_question"],
              green_channel=doc["green_channel"], signed_resident=doc["signed_resident"], waiting=study is None,
              order_id=order["id"])
    await ctx.audit("reading.request", f"reading/{rid}", order["organization"], study_uid=study_uid,
                    kind=order["kind"], priority=order["priority"], order_id=order["id"])
    await ctx.tx.update(ORDERS, order["id"], {"request_id": rid})
    return doc


async def _find_study(tx: Transaction, order: Doc, uids: list[str]) -> Doc | None:
    """The order's study: a Study Instance UID the MPPS or the worklist gave, else its Accession Number."""
    for uid in [*uids, order.get("study_uid"), order["study_instance_uid"]]:
        if uid and (study := await tx.get("studies", uid)) is not None:
            if study.get("organization") == order["organization"]:
                return study
    found = await tx.find("studies", {"organization": order["organization"],
                                      "accession_number": order["accession_number"]}, limit=1)
    return found[0] if found else None


async def on_study_received(ctx: _Ctx, study: Doc) -> None:
    """In the workflow's ``study.received`` transaction: link the study to the orders that asked for it
    (same organisation, its Accession Number or the Study Instance UID the worklist gave); a study with
    no MPPS completes its order here (the quiet period) and gets the order's reading request, which
    the caller then queues with the other waiting requests."""
    accession = study.get("accession_number")
    where: list[Doc] = [{"study_instance_uid": study["id"]}]
    if accession:
        where.append({"accession_number": accession})
    for order in await ctx.tx.find(ORDERS, {"organization": study["organization"], "$or": where}):
        if order["state"] == "cancelled":
            continue
        if order.get("study_uid") not in (None, study["id"]):
            # The first study that came is the order's; another one with its Accession Number is its own.
            log.warning("a second study carries an order's accession number; not linked", extra={
                "order_id": order["id"], "linked_study_uid": order["study_uid"], "study_uid": study["id"]})
            continue
        order = await _link(ctx, order, study)
        if order["state"] in model.OPEN_STATES:
            order = await _apply(ctx, order, "complete", {"performed_at": ctx.at})
            _event(ctx, "completed", order, source="study.received")
            await _audit(ctx, "complete", order, source="study.received")
        if order["state"] == "completed":
            await _reading_request(ctx, order, study["id"], study)


async def on_procedure_step(rt: Runtime, event: Event) -> None:
    """``procedure_step.reported`` (MPPS N-CREATE / N-SET from a modality): move the order; COMPLETED
    links the study and creates and queues the reading request at once.  Idempotent."""
    data = event.data
    async with rt.store.transaction() as tx:
        if not await tx.first_time(GROUP, event.id):
            return
        ctx = _Ctx(rt, tx, SYSTEM, None, settings_of(rt).now(), event.traceparent)
        order = await _order_of_step(tx, data)
        if order is None:
            log.info("MPPS for no order of this organisation", extra={
                "sop_instance_uid": data["sop_instance_uid"], "organization": data["organization"]})
            return
        status = data["status"]
        action = model.MPPS_ACTIONS[status]
        step = {"sop_instance_uid": data["sop_instance_uid"], "status": status, "at": ctx.at,
                "calling_ae": data.get("calling_ae")}
        steps = [s for s in order.get("performed_steps") or [] if s["sop_instance_uid"] != step["sop_instance_uid"]]
        if order["state"] not in model.TRANSITIONS[action][0]:
            # e.g. IN PROGRESS after the study's quiet period already completed it: noted, not moved.
            await tx.update(ORDERS, order["id"], {"performed_steps": [*steps, step]})
            log.info("MPPS does not move the order", extra={"order_id": order["id"], "state": order["state"],
                                                            "mpps_status": status})
            return
        changes: Doc = {"performed_steps": [*steps, step]}
        if action != "start":
            changes["performed_at"] = ctx.at
        order = await _apply(ctx, order, action, changes)
        type = {"start": "in_progress", "complete": "completed", "discontinue": "discontinued"}[action]
        _event(ctx, type, order, source="mpps", sop_instance_uid=data["sop_instance_uid"])
        await _audit(ctx, action, order, source="mpps", sop_instance_uid=data["sop_instance_uid"])
        if action != "complete":
            return
        study = await _find_study(tx, order, list(data.get("study_uids") or []))
        if study is not None:
            order = await _link(ctx, order, study)
        study_uid = study["id"] if study else ((data.get("study_uids") or [None])[0] or order["study_instance_uid"])
        request = await _reading_request(ctx, order, study_uid, study)
        if request is None or request["state"] != "requested" or study is None or not study.get("modalities"):
            return  # no images yet: the study's quiet period (study.received) queues it
        try:
            # MPPS COMPLETED says the exam is done: no quiet period to wait for.
            await _route_and_queue(ctx, request, study)
        except Invalid as exc:
            log.warning("reading request cannot be routed", extra={"request_id": request["id"], "reason": str(exc)})
            await tx.update(RR, request["id"], {"routing_error": str(exc)})


async def _order_of_step(tx: Transaction, data: Doc) -> Doc | None:
    """The order an MPPS reports on: by its Scheduled Procedure Step ID, else its Accession Number, in the
    modality's organisation only."""
    org = data["organization"]
    for field, values in (("scheduled_step_id", data.get("scheduled_step_ids")),
                          ("accession_number", data.get("accession_numbers"))):
        for value in values or []:
            if value:
                found = await tx.find(ORDERS, {"organization": org, field: value}, limit=1)
                if found:
                    return found[0]
    return None


# --- the reading side ---------------------------------------------------------------------

def overdue_before(rt: Runtime) -> str:
    """Orders scheduled before this instant with no study yet are overdue (``YILIAN_ORDER_OVERDUE_SECONDS``)."""
    settings = settings_of(rt)
    return iso(settings.now() - settings.order_overdue_seconds)
