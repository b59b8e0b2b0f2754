"""Duty rosters (排班管理): who is on duty when, and the rules a roster keeps.  I/O free.

A shift is a document ``{id, centre, reader, kind, start, end}`` with ``start``/``end`` UTC ISO
8601 text (``…Z``, milliseconds), which sorts as time, so comparisons are on the text; a shift
covers ``start <= t < end``.  Kinds: ``day`` and ``night`` shifts read at the workstation (they
are the centre's capacity); an ``on_call`` reader (听班) is reachable, not reading: he counts for
escalations, not for capacity.  Shared by the workflow (routing, SLA risk), delivery (critical
escalations) and the API (who is on duty now); the figures may use :func:`on_duty`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

KINDS = ("day", "night", "on_call")
CAPACITY_KINDS = ("day", "night")  # at the workstation: what routing counts
MAX_SHIFT_SECONDS = 24 * 3600

Shift = Mapping[str, Any]


def covers(shift: Shift, at: str) -> bool:
    return shift["start"] <= at < shift["end"]


def on_duty(shifts: Iterable[Shift], at: str, *, kinds: Iterable[str] = KINDS) -> list[Shift]:
    """The shifts running at ``at`` (UTC ISO text), of ``kinds``, by centre, kind and reader."""
    wanted = set(kinds)
    return sorted((s for s in shifts if s["kind"] in wanted and covers(s, at)),
                  key=lambda s: (s["centre"], KINDS.index(s["kind"]), s["reader"]))


def readers_on_duty(shifts: Iterable[Shift], at: str, *, kinds: Iterable[str] = CAPACITY_KINDS) -> list[str]:
    """The distinct readers on duty at ``at`` (capacity kinds unless told otherwise), sorted."""
    return sorted({s["reader"] for s in on_duty(shifts, at, kinds=kinds)})


def overlaps(shifts: Iterable[Shift]) -> list[tuple[Shift, Shift]]:
    """Pairs of one reader's shifts that overlap in time (at any centre)."""
    by_reader: dict[str, list[Shift]] = {}
    for s in shifts:
        by_reader.setdefault(s["reader"], []).append(s)
    found = []
    for items in by_reader.values():
        items.sort(key=lambda s: (s["start"], s["end"]))
        for i, a in enumerate(items):
            for b in items[i + 1:]:
                if b["start"] >= a["end"]:
                    break
                found.append((a, b))
    return found


def understaffed(shifts: Iterable[Shift], minimum: Mapping[str, int]) -> list[tuple[str, str, int, int]]:
    """Where fewer than ``minimum[kind]`` readers are on a ``kind`` shift while one of that kind runs:
    ``(kind, from, readers, minimum)`` for each boundary instant it is short from (the count only
    changes at a shift's start or end, so those instants are all one needs to look at)."""
    items = list(shifts)
    short = []
    for kind in KINDS:
        need = minimum.get(kind, 0)
        of_kind = [s for s in items if s["kind"] == kind]
        if need <= 0 or not of_kind:
            continue
        for at in sorted({s["start"] for s in of_kind} | {s["end"] for s in of_kind}):
            count = len({s["reader"] for s in of_kind if covers(s, at)})
            if 0 < count < need:
                short.append((kind, at, count, need))
    return short


def escalation_targets(on_duty_readers: list[str], leads: list[str], step: int) -> list[str]:
    """Who a critical finding's escalation goes to: the centre's on-duty readers at the first step,
    its lead(s) (科主任) as well from the second, and the leads alone when nobody is on duty."""
    if not on_duty_readers:
        return list(leads)
    if step <= 1:
        return list(on_duty_readers)
    return list(dict.fromkeys([*on_duty_readers, *leads]))
