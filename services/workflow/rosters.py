"""Duty rosters (排班管理): a coordinator sets his centre's shifts for a period; routing, SLA risk
and critical escalations read who is on duty (the rules: :mod:`services.core.roster`).

``SetRoster`` replaces the centre's shifts that start in ``[start, end)`` with the given ones,
in one transaction with ``roster.changed`` and the audit record, after checking the whole
result: each reader one shift at a time, and at least the centre's ``min_on_duty`` readers per
shift kind while a shift of that kind runs.  A centre that has never had a shift keeps the
consortium file's ``on_duty`` flags (docs/quality.md#duty-rosters).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ..core import duty, roster
from ..core.consortium import Consortium
from ..core.localtime import utc
from ..core.times import iso
from .context import CommandContext
from .errors import Forbidden, Invalid, NotFound

SHIFTS = duty.SHIFTS
MAX_PERIOD_SECONDS = 62 * 86400
Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SetRoster:
    """A coordinator's shifts for his centre in ``[start, end)`` (each ``{reader, kind, start, end}``)."""

    centre: str
    start: str
    end: str
    shifts: tuple[dict, ...]


def instant(value: Any, what: str) -> str:
    """UTC ISO text of an ISO 8601 instant with its offset (a coordinator writes local time, +08:00)."""
    if not isinstance(value, str):
        raise Invalid(f"{what} must be an ISO 8601 time with its offset")
    try:
        return iso(utc(value).timestamp())
    except ValueError as exc:
        raise Invalid(f"{what}: {exc}") from None


def _shift(consortium: Consortium, centre: str, raw: Any, i: int, start: str, end: str) -> Doc:
    if not isinstance(raw, dict):
        raise Invalid(f"shifts[{i}] must be an object {{reader, kind, start, end}}")
    reader = consortium.users.get(raw.get("reader")) if isinstance(raw.get("reader"), str) else None
    if reader is None or reader.role != "reader" or reader.centre != centre:
        raise Invalid(f"shifts[{i}]: {raw.get('reader')!r} is not a reader of centre {centre}")
    if raw.get("kind") not in roster.KINDS:
        raise Invalid(f"shifts[{i}]: kind must be one of {', '.join(roster.KINDS)}, not {raw.get('kind')!r}")
    s, e = instant(raw.get("start"), f"shifts[{i}].start"), instant(raw.get("end"), f"shifts[{i}].end")
    if not s < e or utc(e).timestamp() - utc(s).timestamp() > roster.MAX_SHIFT_SECONDS:
        raise Invalid(f"shifts[{i}] ({reader.id}, {raw['kind']}) must end after it starts, within 24 hours")
    if not start <= s < end:
        raise Invalid(f"shifts[{i}] ({reader.id}) starts at {s}, outside the roster's period {start} .. {end}")
    return {"centre": centre, "reader": reader.id, "reader_name": reader.name, "kind": raw["kind"],
            "start": s, "end": e}


async def set_roster(ctx: CommandContext, cmd: SetRoster) -> Doc:
    consortium = ctx.rt.consortium
    if ctx.actor.role not in ("coordinator", "admin"):
        raise Forbidden(f"a {ctx.actor.role} may not edit duty rosters")
    centre = consortium.centres.get(cmd.centre) if isinstance(cmd.centre, str) else None
    if centre is None or (ctx.actor.role == "coordinator" and ctx.actor.centre != centre.id):
        raise NotFound(f"no centre {cmd.centre!r}")
    start, end = instant(cmd.start, "start"), instant(cmd.end, "end")
    if not start < end or utc(end).timestamp() - utc(start).timestamp() > MAX_PERIOD_SECONDS:
        raise Invalid("a roster's period must end after it starts, within 62 days")
    shifts = [_shift(consortium, centre.id, raw, i, start, end) for i, raw in enumerate(cmd.shifts)]
    # The shifts kept around the period (one shift is at most 24 h, so nothing further can touch it)
    near = await ctx.tx.find(SHIFTS, {"centre": centre.id, "start": {"$gte": iso(utc(start).timestamp() - 86400),
                                                                     "$lt": iso(utc(end).timestamp() + 86400)}})
    replaced = [s for s in near if start <= s["start"] < end]
    kept = [s for s in near if not start <= s["start"] < end]
    result = kept + shifts
    if clashes := roster.overlaps(result):
        a, b = clashes[0]
        raise Invalid(f"{a['reader']} would be on two shifts at once: {a['kind']} {a['start']} .. {a['end']} "
                      f"and {b['kind']} {b['start']} .. {b['end']}")
    if short := roster.understaffed(result, centre.min_on_duty):
        kind, at, count, need = short[0]
        raise Invalid(f"centre {centre.id} needs at least {need} reader(s) on {kind} shifts while one runs; "
                      f"from {at} it would have {count}")
    for s in replaced:
        await ctx.tx.delete(SHIFTS, s["id"])
    for s in shifts:
        s.update(id=f"sh-{uuid.uuid4().hex[:20]}", set_by=ctx.actor.user_id, set_at=ctx.at)
        await ctx.tx.insert(SHIFTS, s)
    ctx.emit("roster.changed", centre.id, {"centre": centre.id, "start": start, "end": end, "shifts": len(shifts),
                                           "replaced": len(replaced), "actor": ctx.actor.user_id})
    await ctx.record("roster.set", f"centre/{centre.id}/roster", centre.organization, start=start, end=end,
                     shifts=len(shifts), replaced=len(replaced))
    return {"centre": centre.id, "start": start, "end": end,
            "shifts": sorted(shifts, key=lambda s: (s["start"], s["reader"]))}


# who is on duty (routing, SLA risk, the API): shared with delivery's critical escalations
has_roster, shifts_at, readers_on_duty = duty.has_roster, duty.shifts_at, duty.readers_on_duty
next_capacity_start, leads = duty.next_capacity_start, duty.leads
