"""ECG triage: automatic measurements far outside normal raise the open request's priority.

Consumer group ``ecg_triage``.  Two moments:

* ``study.received`` for a study whose modalities include ECG — raises the requests already
  open for it (a clinic may ask before the ECG arrives);
* ``reading.queued`` — a request created (by a clinic or a site rule) for an ECG study that
  has already arrived.

The thresholds (``services.ecg.prioritise``) decide; the raise is one step (routine ->
urgent, urgent -> stat), never a lowering, at most once per request (``ecg_triage`` on
the request), with a shorter deadline when the new priority's SLA ends sooner.  The
change, the ``reading.priority_raised`` event and the audit record are one transaction.
Requests opened by escalation are left alone: they inherit the already raised priority.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core import audit, bounded
from ..core.events import Event
from ..core.runtime import Runtime
from ..ecg import measure as measuring
from ..ecg.load import load
from ..ecg.prioritise import Thresholds, breaches, raised
from ..ecg.waveform import ECG_SOP_CLASSES, WaveformError
from . import model
from .leases import iso, parse_iso
from .service import RR, settings_of

log = logging.getLogger("yilian.workflow.ecg_triage")

GROUP = "ecg_triage"
ACTOR = "system:ecg_triage"
THRESHOLDS_KEY = "ecg.thresholds"

Doc = dict[str, Any]


def subscribe(rt: Runtime) -> None:
    """Register the triage consumer on ``rt``'s bus (called by the workflow service)."""
    rt.bus.subscribe(GROUP, ["study.received", "reading.queued"], lambda event: on_event(rt, event))


def thresholds_of(rt: Runtime) -> Thresholds:
    found = rt.shared.get(THRESHOLDS_KEY)
    if found is None:
        found = rt.shared[THRESHOLDS_KEY] = Thresholds.from_env()
    return found


async def on_event(rt: Runtime, event: Event) -> None:
    study_uid = event.data.get("study_uid")
    if event.type == "study.received" and "ECG" not in (event.data.get("modalities") or []):
        return
    study = await rt.store.get("studies", study_uid) if study_uid else None
    if study is None or "ECG" not in (study.get("modalities") or []):
        return
    open_requests = await rt.store.find(RR, {"study_uid": study_uid, "state": {"$in": list(model.OPEN_STATES)}})
    if not [r for r in open_requests if _eligible(r)]:
        return  # nothing to raise: do not spend the CPU
    finding = await _worst_finding(rt, study_uid)
    if finding is None:
        return
    async with rt.store.transaction() as tx:
        if not await tx.first_time(GROUP, event.id):
            return
        for stale in open_requests:
            doc = await tx.get(RR, stale["id"])
            if doc is not None and _eligible(doc):
                await _raise(rt, tx, doc, finding, event)


def _eligible(doc: Doc) -> bool:
    return (doc.get("state") in model.OPEN_STATES and not doc.get("ecg_triage")
            and doc.get("source") != "escalation" and raised(doc.get("priority", "")) is not None)


async def _worst_finding(rt: Runtime, study_uid: str) -> Doc | None:
    """The first ECG instance of the study whose measurements breach a threshold, with them."""
    thresholds = thresholds_of(rt)
    instances = await rt.store.find("instances", {"study_uid": study_uid,
                                                  "sop_class_uid": {"$in": list(ECG_SOP_CLASSES)}},
                                    sort=(("series_uid", 1), ("instance_number", 1), ("id", 1)))
    for instance in instances:
        try:
            ecg = await load(rt.blobs, instance, bounded.Limits.of(rt.settings))
        except (WaveformError, KeyError) as exc:
            log.warning("ECG instance cannot be measured", extra={"sop_instance_uid": instance["id"],
                                                                  "reason": str(exc)})
            continue
        group = ecg.rhythm()
        lead = thresholds.lead if group.lead(thresholds.lead) is not None else None
        result = await asyncio.to_thread(measuring.measure, group, lead)
        found = breaches(result, thresholds)
        if found:
            values = {k: v.get("value") for k, v in result["measurements"].items()}
            return {"sop_instance_uid": instance["id"], "lead": result["lead"], "breaches": found,
                    "measurements": values, "reason": "; ".join(b["reason"] for b in found)}
    return None


async def _raise(rt: Runtime, tx: Any, doc: Doc, finding: Doc, cause: Event) -> None:
    now = settings_of(rt).now()
    at = iso(now)
    before, after = doc["priority"], raised(doc["priority"])
    changes: Doc = {"priority": after, "priority_rank": model.PRIORITY_RANK[after],
                    "ecg_triage": {**finding, "from": before, "to": after, "at": at, "by": ACTOR},
                    "version": doc.get("version", 0) + 1, "updated_at": at,
                    "history": [*doc.get("history", []), {"action": "raise_priority", "state": doc["state"],
                                                          "at": at, "by": ACTOR}]}
    if doc.get("queued_at") and doc.get("deadline"):
        # The new priority's SLA counts from when the request was queued; never a later deadline.
        sla = rt.consortium.sla_seconds(doc["kind"], after)
        queued = parse_iso(doc["queued_at"])
        deadline = min(doc["deadline"], iso(queued + sla))
        changes["deadline"] = deadline
        changes["sla_risk_at"] = min(doc.get("sla_risk_at") or deadline,
                                     iso(queued + sla * settings_of(rt).sla_risk_fraction))
    if not await tx.update(RR, doc["id"], changes, where={"version": doc.get("version", 0)}):
        raise RuntimeError(f"reading request {doc['id']} changed concurrently; the event will be retried")
    doc = {**doc, **changes}
    data = {"request_id": doc["id"], "study_uid": doc["study_uid"], "organization": doc["organization"],
            "kind": doc["kind"], "priority": after, "state": doc["state"], "centre": doc.get("centre"),
            "actor": ACTOR, "from_priority": before, "to_priority": after, "reason": finding["reason"],
            "breaches": finding["breaches"], "measurements": finding["measurements"],
            "sop_instance_uid": finding["sop_instance_uid"], "lead": finding["lead"],
            "deadline": doc.get("deadline")}
    tx.emit(cause.caused("reading.priority_raised", doc["id"], data, source=rt.source("workflow")))
    await audit.record(tx, actor=ACTOR, role="system", action="reading.priority_raise",
                       resource=f"reading/{doc['id']}", organization=doc["organization"],
                       detail={"from": before, "to": after, "reason": finding["reason"],
                               "breaches": finding["breaches"], "sop_instance_uid": finding["sop_instance_uid"]},
                       traceparent=cause.traceparent)
    log.info("reading request priority raised by ECG triage",
             extra={"request_id": doc["id"], "from": before, "to": after, "reason": finding["reason"]})
