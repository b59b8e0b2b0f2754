"""Routing: which centre reads a request, by when, and SLA-aware overflow.  I/O free.

The consortium's routes say which centre reads a kind (and modality) for an origin and
which centres may take its overflow.  The SLA table gives the deadline.  A centre's
finish time for a new task is estimated from the open tasks that would be read before
it and its on-duty readers at ``capacity_per_reader_per_hour``; when the routed centre
would miss the deadline and an overflow centre would not (or would be less late), the
request goes there and the move is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.consortium import Consortium
from .errors import Invalid

# Modalities that never carry the images to read (reports, presentation states, key objects).
NON_IMAGE_MODALITIES = ("SR", "PR", "KO", "DOC", "REG", "SEG")


@dataclass(frozen=True, slots=True)
class CentreLoad:
    """What a centre has on its plate, as seen by one new task."""

    centre: str
    ahead: int  # open tasks at the centre that would be read before the new one
    readers: int  # on-duty readers of the centre
    capacity_per_reader_per_hour: int

    def finish_seconds(self) -> float:
        """Seconds from now until the new task would be read (infinite with nobody on duty)."""
        if self.readers <= 0:
            return math.inf
        per_second = self.readers * self.capacity_per_reader_per_hour / 3600.0
        return (self.ahead + 1) / per_second


@dataclass(frozen=True, slots=True)
class Decision:
    centre: str  # where the request is queued
    routed_centre: str  # where the rules send it first
    estimated_finish_seconds: float | None  # None: nobody on duty
    overflow_reason: str | None = None  # set when centre != routed_centre

    @property
    def overflow(self) -> bool:
        return self.centre != self.routed_centre


def reading_modality(consortium: Consortium, origin: str, kind: str, modalities: list[str]) -> str | None:
    """The study modality that routes the request: the first one a route knows."""
    if kind == "ecg":
        return "ECG" if "ECG" in modalities else (modalities[0] if modalities else None)
    candidates = [m for m in modalities if m not in NON_IMAGE_MODALITIES] or list(modalities)
    for modality in candidates:
        if consortium.routes_for(origin, kind, modality):
            return modality
    return candidates[0] if candidates else None


def centres_for(consortium: Consortium, origin: str, kind: str, modality: str | None) -> list[str]:
    """The routed centre, then its overflow centres in order; :class:`Invalid` if no route."""
    routes = consortium.routes_for(origin, kind, modality)
    if not routes:
        raise Invalid(f"no reading centre is configured for {kind} ({modality or 'any modality'}) "
                      f"from organization {origin!r}")
    route = routes[0]
    out = [route.centre]
    out += [c for c in route.overflow if c not in out and kind in consortium.centres[c].kinds]
    return out


def on_duty_readers(consortium: Consortium, centre: str) -> int:
    return sum(1 for u in consortium.users.values() if u.role == "reader" and u.reads_for(centre) and u.on_duty)


def choose(loads: list[CentreLoad], sla_seconds: int) -> Decision:
    """Keep the routed centre (``loads[0]``) if it meets the SLA; else the first overflow that does;
    else the least late of all."""
    routed = loads[0]
    finish = routed.finish_seconds()
    if finish <= sla_seconds:
        return Decision(routed.centre, routed.centre, _finite(finish))
    for load in loads[1:]:
        if load.finish_seconds() <= sla_seconds:
            return Decision(load.centre, routed.centre, _finite(load.finish_seconds()),
                            _reason(routed, finish, sla_seconds))
    best = min(loads, key=lambda ld: (ld.finish_seconds(), loads.index(ld)))
    if best is routed or best.finish_seconds() >= finish:
        return Decision(routed.centre, routed.centre, _finite(finish))
    return Decision(best.centre, routed.centre, _finite(best.finish_seconds()),
                    _reason(routed, finish, sla_seconds) + "; no centre meets it, this one is least late")


def _finite(seconds: float) -> float | None:
    return None if math.isinf(seconds) else round(seconds, 1)


def _reason(routed: CentreLoad, finish: float, sla: int) -> str:
    if math.isinf(finish):
        return f"{routed.centre} has no reader on duty"
    return (f"{routed.centre} would finish in {finish / 60:.0f} min ({routed.ahead} ahead, "
            f"{routed.readers} reader(s) on duty) but the SLA is {sla / 60:.0f} min")
