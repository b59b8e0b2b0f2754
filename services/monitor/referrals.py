"""Referral (双向转诊) and recognition (结果互认) figures, recomputed from the event log.

Nothing here is kept: every figure is a fold over the ``referral.*`` and ``recognition.*``
events (:func:`fold`, pure), so anyone holding the log gets the same numbers.  Months are the
consortium's local months of ``requested_at`` (a referral counts in the month it was raised);
durations are measured between the events' ``at`` (the workflow clock) and ``requested_at``.

* per site and month: up-referrals raised (referring clinic) and received (upper hospital),
  down-referrals sent (hospital) and received (township); green channel, refused, escalated;
* per hospital and month: the down-referral rate (下转率) = down-referrals sent / up-referrals
  received;
* time from request to acceptance and to arrival (count, median, 90th percentile, seconds);
* reserved slots per hospital and department: published, booked, used (the patient arrived),
  released to the general pool unused, no-shows, and the use rate = used / published;
* recognition: requests held for a recognised prior, recognised results used (repeats
  avoided), repeats with an exception reason, by reason and by item.

``GET /api/v1/monitor/referrals`` (coordinator: his organisation's rows; admin: all), with
``?month=YYYY-MM`` to keep one month.  The consortium indicators page reads this.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ..core.http import Problem, json_response, require_role, runtime
from ..core.localtime import LocalTime
from ..core.times import parse_iso

routes = web.RouteTableDef()

TYPES = ("referral.requested", "referral.accepted", "referral.refused", "referral.arrived", "referral.completed",
         "referral.escalated", "referral.no_show", "referral.green_channel", "referral.booked",
         "referral.slots_published", "referral.slot_released", "recognition.decided")

Doc = dict[str, Any]


def _seconds(a: str, b: str) -> float:
    return parse_iso(b) - parse_iso(a)


def _spread(values: list[float]) -> Doc:
    if not values:
        return {"count": 0, "median_seconds": None, "p90_seconds": None}
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest rank
    return {"count": len(ordered), "median_seconds": round(median), "p90_seconds": round(p90)}


def fold(events: Iterable[tuple[str, Doc]], local: LocalTime) -> Doc:
    """The figures of ``events`` — (type, data) pairs in log order."""
    month_of: dict[str, str] = {}  # referral id -> its month
    requested_at: dict[str, str] = {}
    sites: dict[tuple[str, str], Doc] = defaultdict(lambda: {
        "up_raised": 0, "up_received": 0, "down_sent": 0, "down_received": 0, "green_channel": 0,
        "refused": 0, "escalated": 0, "no_shows": 0})
    to_accept: dict[str, list[float]] = defaultdict(list)
    to_arrive: dict[str, list[float]] = defaultdict(list)
    slots: dict[tuple[str, str], Doc] = defaultdict(lambda: {
        "published": 0, "booked": 0, "used": 0, "released_unused": 0, "no_shows": 0})
    recognition: Doc = {"held": 0, "used_prior": 0, "repeats_avoided": 0, "repeated": 0, "by_reason": defaultdict(int),
                        "by_item": defaultdict(lambda: {"held": 0, "used_prior": 0, "repeated": 0})}
    booked_slot: dict[str, str] = {}  # referral -> slot id, so a rebooking counts once

    for type_, d in events:
        if type_ == "recognition.decided":
            item = recognition["by_item"][d.get("item") or "?"]
            recognition["held"] += 1
            item["held"] += 1
            if d.get("decision") == "use_prior":
                recognition["used_prior"] += 1
                recognition["repeats_avoided"] += 1
                item["used_prior"] += 1
            else:
                recognition["repeated"] += 1
                recognition["by_reason"][d.get("reason") or "?"] += 1
                item["repeated"] += 1
            continue
        if type_ == "referral.slots_published":
            slots[(d["organization"], d["department"])]["published"] += len(d.get("slots") or [])
            continue
        if type_ == "referral.slot_released":
            slots[(d["organization"], d["department"])]["released_unused"] += 1
            continue
        rid = d["referral_id"]
        if rid not in month_of:
            month_of[rid] = local.local(d["requested_at"]).strftime("%Y-%m")
            requested_at[rid] = d["requested_at"]
        month, up = month_of[rid], d["direction"] == "up"
        origin, target = d["organization"], d["target_organization"]
        if type_ == "referral.requested":
            sites[(origin, month)]["up_raised" if up else "down_sent"] += 1
            sites[(target, month)]["up_received" if up else "down_received"] += 1
        elif type_ == "referral.green_channel":
            sites[(target, month)]["green_channel"] += 1
        elif type_ == "referral.refused":
            sites[(target, month)]["refused"] += 1
        elif type_ == "referral.escalated":
            sites[(target, month)]["escalated"] += 1
        elif type_ == "referral.accepted" and up:
            to_accept[target].append(_seconds(requested_at[rid], d["at"]))
        elif type_ == "referral.booked":
            slot = d.get("slot") or {}
            if booked_slot.get(rid) != slot.get("id"):
                booked_slot[rid] = slot.get("id")
                slots[(slot.get("organization"), slot.get("department"))]["booked"] += 1
        elif type_ == "referral.arrived":
            to_arrive[target].append(_seconds(requested_at[rid], d["at"]))
            if slot := d.get("slot"):
                slots[(slot["organization"], slot["department"])]["used"] += 1
        elif type_ == "referral.no_show":
            sites[(target, month)]["no_shows"] += 1
            if slot := d.get("slot"):
                slots[(slot["organization"], slot["department"])]["no_shows"] += 1

    site_rows = []
    for (site, month), row in sorted(sites.items()):
        rate = row["down_sent"] / row["up_received"] if row["up_received"] else None
        site_rows.append({"organization": site, "month": month, **row,
                          "down_referral_rate": round(rate, 4) if rate is not None else None})
    slot_rows = []
    for (org, dept), row in sorted(slots.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        use = row["used"] / row["published"] if row["published"] else None
        slot_rows.append({"organization": org, "department": dept, **row,
                          "use_rate": round(use, 4) if use is not None else None})
    hospitals = sorted(set(to_accept) | set(to_arrive))
    return {
        "sites": site_rows,
        "times": [{"organization": h, "to_acceptance": _spread(to_accept[h]), "to_arrival": _spread(to_arrive[h])}
                  for h in hospitals],
        "slots": slot_rows,
        "recognition": {**{k: recognition[k] for k in ("held", "used_prior", "repeats_avoided", "repeated")},
                        "by_reason": dict(sorted(recognition["by_reason"].items())),
                        "by_item": {k: dict(v) for k, v in sorted(recognition["by_item"].items())}},
    }


async def compute(store: Any, local: LocalTime) -> Doc:
    """Read the whole log (only these types) and fold it."""
    pairs: list[tuple[str, Doc]] = []
    after = 0
    while True:
        batch = await store.read_log(after, limit=5000, types=list(TYPES))
        pairs += [(e.event.type, e.event.data) for e in batch]
        if len(batch) < 5000:
            break
        after = batch[-1].seq
    return fold(pairs, local)


@routes.get("/api/v1/monitor/referrals")
async def referral_figures(request: web.Request) -> web.Response:
    """The consortium's referral and recognition figures (coordinator: rows of his organisation)."""
    who = require_role(request, "coordinator", "admin")
    unknown = set(request.query) - {"month"}
    if unknown:
        raise Problem(422, f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    month = request.query.get("month")
    if month is not None and not (len(month) == 7 and month[4] == "-" and month.replace("-", "").isdigit()):
        raise Problem(422, f"month must be YYYY-MM, not {month!r}")
    rt = runtime(request)
    figures = await compute(rt.store, LocalTime.named(rt.consortium.timezone))
    if month is not None:
        figures["sites"] = [r for r in figures["sites"] if r["month"] == month]
    if who.role == "coordinator":
        mine = who.organization
        figures["sites"] = [r for r in figures["sites"] if r["organization"] == mine]
        figures["times"] = [r for r in figures["times"] if r["organization"] == mine]
        figures["slots"] = [r for r in figures["slots"] if r["organization"] == mine]
    return json_response({"timezone": rt.consortium.timezone, **figures})
