"""危急值: a critical result must be acknowledged by a person at the clinic in time.

A critical result gets ``ack_due_at`` = recorded + ``YILIAN_CRITICAL_ACK_SECONDS``.  When it
passes unacknowledged, each sweep escalates once per ``YILIAN_CRITICAL_REPEAT_SECONDS``: the
result is flagged (``escalated``, for the centre's monitor), ``critical.unacknowledged`` names
the clinic's configured ``contact`` (the API's live stream pushes it to the clinic's screens
again) and ``escalate_to``: the reading centre's readers on duty now (its roster, on call
included), its lead(s) as well from the second step, the leads alone when nobody is on duty;
the step is audited.  Acknowledgement clears ``ack_due_at``, which ends it.
"""

from __future__ import annotations

import logging

from ..core import duty
from ..core.runtime import Runtime
from .service import RESULTS, _audit, _event, iso, parse_iso, settings_of

log = logging.getLogger("yilian.delivery")


async def escalate_overdue(rt: Runtime) -> int:
    """One sweep; how many escalation steps were taken."""
    settings = settings_of(rt)
    now = settings.now()
    overdue = await rt.store.find(RESULTS, {"critical": True, "acknowledged_at": None,
                                            "ack_due_at": {"$lte": iso(now)}}, sort=(("ack_due_at", 1),), limit=200)
    steps = 0
    for stale in overdue:
        async with rt.store.transaction() as tx:
            result = await tx.get(RESULTS, stale["id"])
            if result is None or result.get("acknowledged_at") or not result.get("ack_due_at") \
                    or result["ack_due_at"] > iso(now):
                continue
            step = (result.get("escalations") or 0) + 1
            changes = {"escalated": True, "escalations": step, "last_escalated_at": iso(now),
                       "ack_due_at": iso(now + settings.critical_repeat_seconds), "version": result["version"] + 1}
            if not await tx.update(RESULTS, result["id"], changes, where={"version": result["version"]}):
                continue  # acknowledged or escalated by another process meanwhile
            org = rt.consortium.organizations.get(result["organization"])
            contact = org.contact if org is not None else None
            # the reading centre's side: its readers on duty now, its lead(s) from the second step (排班管理)
            targets = await duty.escalation_targets(rt.store, rt.consortium, result.get("centre"), iso(now), step)
            overdue_s = round(now - parse_iso(result["created_at"]) - settings.critical_ack_seconds, 3)
            tx.emit(_event(rt, "critical.unacknowledged", result, result.get("traceparent"), escalation=step,
                           contact=contact, critical_category=result.get("critical_category"),
                           patient_name=result.get("patient_name"), delivered_at=result.get("delivered_at"),
                           due_at=result["ack_due_at"], overdue_seconds=max(0.0, overdue_s),
                           next_escalation_at=changes["ack_due_at"], escalate_to=targets))
            await _audit(tx, "critical.escalate", result, traceparent=result.get("traceparent"), escalation=step,
                         contact=contact, due_at=result["ack_due_at"], escalate_to=targets)
            steps += 1
            log.warning("critical result unacknowledged; escalated", extra={
                "result_id": result["id"], "organization": result["organization"], "escalation": step,
                "contact": contact})
    return steps
