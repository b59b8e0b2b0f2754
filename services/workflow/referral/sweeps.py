"""The referral timers, run by the workflow service's sweeper (every ``YILIAN_WORKFLOW_SWEEP_SECONDS``):

* ``referral.escalated``: an up-referral unanswered ``referral.answer_within`` after it was raised
  is flagged, once, to the coordinator (the event and the monitor);
* ``referral.slot_released``: a reserved slot still free at its release time returns to the
  hospital's general pool;
* ``referral.no_show``: an accepted up-referral whose slot ended without the patient arriving.
"""

from __future__ import annotations

from ...core.auth import Principal
from ...core.events import new_traceparent
from ...core.runtime import Runtime
from ..context import settings_of
from ..leases import iso, parse_iso
from .service import REFERRALS, SLOTS, _apply, _Ctx

SYSTEM = Principal("system:workflow", "system", "", None, "")


async def escalate(rt: Runtime) -> int:
    now = settings_of(rt).now()
    due = iso(now - rt.consortium.referral.answer_within)
    found = await rt.store.find(REFERRALS, {"direction": "up", "state": "requested", "escalated_at": None,
                                            "requested_at": {"$lte": due}}, sort=(("requested_at", 1),), limit=500)
    done = 0
    for stale in found:
        async with rt.store.transaction() as tx:
            ctx = _Ctx(rt, tx, SYSTEM, None, now, new_traceparent())
            doc = await tx.get(REFERRALS, stale["id"])
            if doc is None or doc["state"] != "requested" or doc.get("escalated_at"):
                continue
            doc = await _apply(ctx, doc, "escalate", {"escalated_at": ctx.at})
            ctx.event("escalated", doc, waited_seconds=round(now - parse_iso(doc["requested_at"])),
                      answer_within=rt.consortium.referral.answer_within)
            await ctx.audit("escalate", doc)
            done += 1
    return done


async def release_slots(rt: Runtime) -> int:
    now = settings_of(rt).now()
    found = await rt.store.find(SLOTS, {"state": "reserved", "release_at": {"$lte": iso(now)}},
                                sort=(("release_at", 1),), limit=1000)
    done = 0
    for slot in found:
        async with rt.store.transaction() as tx:
            if not await tx.update(SLOTS, slot["id"], {"state": "released", "released_at": iso(now)},
                                   where={"state": "reserved", "referral_id": None}):
                continue  # booked meanwhile
            ctx = _Ctx(rt, tx, SYSTEM, None, now, new_traceparent())
            ctx.emit("referral.slot_released", slot["id"], {
                "organization": slot["organization"], "department": slot["department"], "kind": slot["kind"],
                "slot_id": slot["id"], "start": slot["start"], "end": slot["end"], "release_at": slot["release_at"],
                "actor": SYSTEM.user_id, "at": iso(now)})
            done += 1
    return done


async def flag_no_shows(rt: Runtime) -> int:
    now = settings_of(rt).now()
    found = await rt.store.find(REFERRALS, {"direction": "up", "state": "accepted", "slot.end": {"$lte": iso(now)}},
                                limit=500)
    done = 0
    for stale in found:
        async with rt.store.transaction() as tx:
            ctx = _Ctx(rt, tx, SYSTEM, None, now, new_traceparent())
            doc = await tx.get(REFERRALS, stale["id"])
            if doc is None or doc["state"] != "accepted":
                continue
            await tx.update(SLOTS, doc["slot_id"], {"state": "no_show"}, where={"referral_id": doc["id"]})
            doc = await _apply(ctx, doc, "flag_no_show", {"no_show_at": ctx.at})
            ctx.event("no_show", doc, slot=doc.get("slot"))
            await ctx.audit("no_show", doc)
            done += 1
    return done


async def sweep(rt: Runtime) -> tuple[int, int, int]:
    """One pass: (escalated, slots released, no-shows)."""
    return await escalate(rt), await release_slots(rt), await flag_no_shows(rt)

