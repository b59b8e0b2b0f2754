"""Who is on duty, read from the store's duty rosters (``shifts``; services/workflow/rosters.py sets
them, :mod:`.roster` holds the rules).  Shared by the workflow (routing, SLA risk), delivery
(critical escalations) and the API."""

from __future__ import annotations

from typing import Any

from . import roster
from .consortium import Consortium
from .localtime import utc
from .store.port import Store
from .times import iso

SHIFTS = "shifts"
Doc = dict[str, Any]


async def has_roster(store: Store, centre: str) -> bool:
    return bool(await store.find(SHIFTS, {"centre": centre}, limit=1))


async def shifts_at(store: Store, centre: str | None, at: str) -> list[Doc]:
    """The shifts (of one centre, or all) running at ``at``."""
    where: Doc = {"start": {"$lte": at, "$gt": iso(utc(at).timestamp() - roster.MAX_SHIFT_SECONDS)}}
    if centre is not None:
        where["centre"] = centre
    return roster.on_duty(await store.find(SHIFTS, where), at)


async def readers_on_duty(store: Store, consortium: Consortium, centre: str, at: str) -> list[str]:
    """The centre's readers at the workstation at ``at``: its roster's day and night shifts, or the
    consortium file's ``on_duty`` flags for a centre that has no roster."""
    if not await has_roster(store, centre):
        return sorted(u.id for u in consortium.users.values()
                      if u.role == "reader" and u.centre == centre and u.on_duty)
    return roster.readers_on_duty(await shifts_at(store, centre, at), at)


async def next_capacity_start(store: Store, centre: str, at: str) -> str | None:
    """When the next day or night shift of the centre starts after ``at`` (None: none is rostered)."""
    found = await store.find(SHIFTS, {"centre": centre, "start": {"$gt": at}, "kind": {"$in": list(roster.CAPACITY_KINDS)}},
                             sort=(("start", 1),), limit=1)
    return found[0]["start"] if found else None


def leads(consortium: Consortium, centre: str) -> list[str]:
    return sorted(u.id for u in consortium.users.values() if u.role == "reader" and u.centre == centre and u.lead)


async def escalation_targets(store: Store, consortium: Consortium, centre: str | None, at: str,
                             step: int) -> list[str]:
    """Who a critical finding's escalation step goes to (:func:`.roster.escalation_targets`): the
    centre's readers on duty now (on call included: they are reachable), then its leads."""
    if centre is None or centre not in consortium.centres:
        return []
    if await has_roster(store, centre):
        present = roster.readers_on_duty(await shifts_at(store, centre, at), at, kinds=roster.KINDS)
    else:
        present = await readers_on_duty(store, consortium, centre, at)
    return roster.escalation_targets(present, leads(consortium, centre), step)
