"""Timers of remote consultation, run by the workflow sweeper.

* ``consultation.reminder`` once per slot, ``YILIAN_CONSULTATION_REMINDER_SECONDS`` (default
  900) before it starts (or at the next sweep when scheduled later than that), for the
  delivery service to push to every participant;
* ``consultation.no_show`` when a slot has ended without the consultation starting: the state
  becomes ``no_show``, the specialists' time is released, the coordinator reschedules or cancels.

Time comes from the workflow settings' clock (injectable in tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ...core.events import new_traceparent
from ...core.runtime import Runtime
from ..leases import iso
from ..service import settings_of
from .service import CONSULTATIONS, SYSTEM, _apply, _Ctx, _release

SETTINGS_KEY = "consultation.settings"


@dataclass(frozen=True)
class ConsultationSettings:
    reminder_seconds: float = 900.0

    @classmethod
    def from_env(cls) -> ConsultationSettings:
        raw = os.environ.get("YILIAN_CONSULTATION_REMINDER_SECONDS")
        if not raw:
            return cls()
        try:
            seconds = float(raw)
        except ValueError:
            raise SystemExit(f"YILIAN_CONSULTATION_REMINDER_SECONDS must be a number of seconds, got {raw!r}") \
                from None
        if seconds < 0:
            raise SystemExit("YILIAN_CONSULTATION_REMINDER_SECONDS must not be negative")
        return cls(seconds)


def consultation_settings(rt: Runtime) -> ConsultationSettings:
    settings = rt.shared.get(SETTINGS_KEY)
    if settings is None:
        settings = rt.shared[SETTINGS_KEY] = ConsultationSettings.from_env()
    return settings


async def send_reminders(rt: Runtime) -> int:
    """Emit ``consultation.reminder`` for scheduled consultations starting within the lead time."""
    now = settings_of(rt).now()
    lead = consultation_settings(rt).reminder_seconds
    due = await rt.store.find(CONSULTATIONS, {"state": "scheduled", "reminder_sent": False,
                                              "slot_start": {"$lte": iso(now + lead)},
                                              "slot_end": {"$gt": iso(now)}},  # a passed slot is a no-show
                              sort=(("slot_start", 1),), limit=500)
    sent = 0
    for stale in due:
        async with rt.store.transaction() as tx:
            ctx = _Ctx(rt, tx, SYSTEM, None, now, new_traceparent())
            doc = await tx.get(CONSULTATIONS, stale["id"])
            if doc is None or doc["state"] != "scheduled" or doc.get("reminder_sent") \
                    or doc["slot_start"] > iso(now + lead) or doc["slot_end"] <= ctx.at:
                continue  # started, rescheduled or reminded meanwhile
            doc = await _apply(ctx, doc, "remind", {"reminder_sent": True})
            ctx.event("reminder", doc, slot_start=doc["slot_start"], slot_end=doc["slot_end"],
                      specialists=doc["specialists"], meeting_url=doc.get("meeting_url"), lead_seconds=lead)
            sent += 1
    return sent


async def flag_no_shows(rt: Runtime) -> int:
    """Scheduled consultations whose slot ended without a start become ``no_show``."""
    now = settings_of(rt).now()
    due = await rt.store.find(CONSULTATIONS, {"state": "scheduled", "slot_end": {"$lt": iso(now)}},
                              sort=(("slot_end", 1),), limit=500)
    flagged = 0
    for stale in due:
        async with rt.store.transaction() as tx:
            ctx = _Ctx(rt, tx, SYSTEM, None, now, new_traceparent())
            doc = await tx.get(CONSULTATIONS, stale["id"])
            if doc is None or doc["state"] != "scheduled" or doc["slot_end"] >= ctx.at:
                continue
            doc = await _apply(ctx, doc, "flag_no_show", {"no_show_at": ctx.at})
            await _release(ctx, doc)
            ctx.event("no_show", doc, slot_start=doc["slot_start"], slot_end=doc["slot_end"],
                      specialists=doc["specialists"])
            await ctx.audit("no_show", doc, slot_start=doc["slot_start"], slot_end=doc["slot_end"])
            flagged += 1
    return flagged


async def sweep(rt: Runtime) -> tuple[int, int]:
    """One pass: (reminders sent, no-shows flagged)."""
    return await send_reminders(rt), await flag_no_shows(rt)
