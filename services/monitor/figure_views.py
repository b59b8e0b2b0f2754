"""The consortium's figures and statements read back from the store, scoped to the caller.

Reads the monitor's read model (``monitor_requests``, ``monitor_results``) and the facts
(``figures_*``, ``settlement_*``); the indicators themselves are ``indicators.py`` (no I/O).
Reconciliation alone also reads the workflow's ``reports`` and ``consultations`` (the records
the ledger must match), through the shared store, never the workflow's code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from ..core.consortium import PRIORITIES, Consortium
from ..core.localtime import LocalTime
from ..core.store.port import Store
from . import facts, indicators
from .facts import Calendar
from .readmodel import REQUESTS, RESULTS

Doc = dict[str, Any]
PERIOD = re.compile(r"^(\d{4})(?:-(0[1-9]|1[0-2]))?$")
SECTIONS = ("readings", "turnaround", "critical", "quality", "peer_review", "coverage", "referrals", "recognition")


@dataclass(frozen=True, slots=True)
class Period:
    """A local month (``2026-11``) or year (``2026``) and its UTC bounds."""

    text: str
    start: str  # UTC ISO, inclusive
    end: str  # UTC ISO, exclusive

    @classmethod
    def parse(cls, text: str, local_time: LocalTime) -> Period:
        match = PERIOD.match(text or "")
        if not match:
            raise ValueError(f"period {text!r} is not a month (YYYY-MM) or a year (YYYY)")
        year, month = int(match[1]), int(match[2]) if match[2] else None
        first = date(year, month or 1, 1)
        after = date(year + 1, 1, 1) if month in (None, 12) else date(year, month + 1, 1)

        def utc(day: date) -> str:
            local = datetime.combine(day, time(), tzinfo=local_time.tz)
            return local.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(text, utc(first), utc(after))

    def __call__(self, at: str | None) -> bool:
        return bool(at) and self.start <= _norm(at) < self.end

    @property
    def months(self) -> list[str]:
        if len(self.text) == 7:
            return [self.text]
        return [f"{self.text}-{m:02d}" for m in range(1, 13)]


def _norm(at: str) -> str:
    """Instants compare as text once they share one form (UTC, milliseconds, Z)."""
    if at.endswith("Z") and len(at) == 24:
        return at
    parsed = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Scope:
    """What a caller sees: every site (``organizations`` None), some sites, or a reader his own reviews."""

    organizations: frozenset[str] | None = None
    reader: str | None = None

    def site(self, org: str | None) -> bool:
        return self.organizations is None or org in self.organizations


def scope_of(consortium: Consortium, role: str, organization: str | None, user_id: str) -> Scope:
    """Coordinators, admins and auditors (health commission) see all; a clinic its own site and the
    village clinics under it; a reader only his own peer-review figures."""
    if role in ("coordinator", "admin", "auditor"):
        return Scope()
    if role == "reader":
        return Scope(frozenset(), user_id)
    subtree = {o for o in consortium.organizations if organization in consortium.ancestors(o) or o == organization}
    return Scope(frozenset(subtree))


async def referral_figures(store: Store, local_time: LocalTime, period: Period, scope: Scope) -> tuple[Doc, Doc]:
    """Two-way referral and 结果互认 figures for the period and the caller's sites, folded from the
    event log by ``referrals.py`` (the same fold ``GET /api/v1/monitor/referrals`` serves)."""
    from . import referrals
    folded = await referrals.compute(store, local_time)
    months = set(period.months)
    section = {"available": True,
               "sites": [r for r in folded["sites"] if r["month"] in months and scope.site(r["organization"])],
               "times": [t for t in folded["times"] if scope.site(t["organization"])],
               "slots": [t for t in folded["slots"] if scope.site(t["organization"])]}
    # The recognition statistics are consortium-wide (not yet per site): only for who sees every site.
    recognition = ({"available": True, **folded["recognition"]} if scope.organizations is None else
                   {"available": False, "note": "结果互认统计为全医共体口径 (consortium-wide figures: coordinators, admins)"})
    return section, recognition


class FigureViews:
    def __init__(self, store: Store, consortium: Consortium, local_time: LocalTime) -> None:
        self.store, self.consortium, self.local_time = store, consortium, local_time
        self.calendar = Calendar(local_time.tz)

    def period(self, text: str) -> Period:
        return Period.parse(text, self.local_time)

    def sites(self, scope: Scope) -> list[Doc]:
        return [{"organization": o.id, "name": o.name, "level": o.level} for o in self.consortium.organizations.values()
                if o.level in ("township", "village", "county") and scope.site(o.id)]

    async def rows(self, period: Period, scope: Scope) -> dict[str, list[Doc]]:
        """The period's rows (by any of their instants in it), restricted to the caller's sites."""
        window = {"$gte": period.start, "$lt": period.end}
        requests = await self.store.find(REQUESTS, {"$or": [{"signed_at": window}, {"queued_at": window}]})
        results = await self.store.find(RESULTS, {"signed_at": window})
        consultations = await self.store.find(facts.CONSULTATIONS, {"$or": [{"concluded_at": window},
                                                                             {"requested_at": window}]})
        gradings = await self.store.find(facts.GRADINGS, {"graded_at": window})
        reviews = await self.store.find(facts.REVIEWS, {"$or": [{"sampled_at": window}, {"scored_at": window}]})
        keep = scope.site
        if scope.reader is not None:
            reviews = [r for r in reviews if r.get("original_reader") == scope.reader]
        return {"requests": [r for r in requests if keep(r["organization"])],
                "results": [r for r in results if keep(r.get("organization"))],
                "consultations": [c for c in consultations if keep(c["organization"])],
                "gradings": [g for g in gradings if keep(g["organization"])],
                "reviews": reviews if scope.reader is not None or scope.organizations is None else []}

    async def figures(self, period_text: str, scope: Scope) -> Doc:
        period = self.period(period_text)
        rows = await self.rows(period, scope)
        figures = compute(rows, period, self.sites(scope), self.levels(scope), self.consortium, scope)
        if scope.reader is None:
            figures["referrals"], figures["recognition"] = await referral_figures(
                self.store, self.local_time, period, scope)
        return {"period": period.text, "start": period.start, "end": period.end, "timezone": self.local_time.name,
                **figures}

    def levels(self, scope: Scope) -> dict[str, str]:
        return {o.id: o.level for o in self.consortium.organizations.values() if scope.site(o.id)}

    async def trend(self, year: str, scope: Scope) -> list[Doc]:
        """Per month of a year: the headline figures (the dashboard's chart)."""
        out = []
        for month in self.period(year).months:
            period = self.period(month)
            rows = await self.rows(period, scope)
            figures = compute(rows, period, self.sites(scope), self.levels(scope), self.consortium, scope)
            out.append({"month": month, **headline(figures)})
        return out

    # --- settlement ---------------------------------------------------------------------

    async def closed_months(self) -> dict[str, Doc]:
        return {m["id"]: m for m in await self.store.find(facts.MONTHS)}

    async def ledger(self, month: str, scope: Scope) -> list[Doc]:
        entries = await self.store.find(facts.LEDGER, {"posted_month": month}, sort=(("released_at", 1), ("id", 1)))
        return [e for e in entries if scope.site(e.get("requesting")) or scope.site(e.get("reading"))]

    async def statement(self, month: str, scope: Scope) -> Doc:
        """A month's statement per institution pair: frozen if the month is closed, else as of now."""
        closed = (await self.closed_months()).get(month)
        lines = closed["statement"] if closed else facts.statement(await self.ledger(month, Scope()))
        lines = [line for line in lines if scope.site(line["requesting"]) or scope.site(line["reading"])]
        names = {o.id: o.name for o in self.consortium.organizations.values()}
        for line in lines:
            line.update(requesting_name=names.get(line["requesting"]), reading_name=names.get(line["reading"]))
        return {"month": month, "closed": bool(closed), "closed_at": closed["closed_at"] if closed else None,
                "currency": self.consortium.settlement.currency, "lines": lines,
                "totals": {k: sum(line[k] for line in lines) for k in ("entries", "fee_fen", "reading_fen",
                                                                        "requesting_fen")}}

    async def reconciliation(self, month: str) -> Doc:
        """Every released report and concluded consultation of the month against the ledger, both ways."""
        period = self.period(month)
        window = {"$gte": period.start, "$lt": period.end}
        reports = await self.store.find("reports", {"signed_at": window})
        consultations = await self.store.find("consultations", {"concluded_at": window})
        expected = {f"report:{r['id']}" for r in reports}
        expected |= {f"consultation:{c['opinion']['id']}" for c in consultations if c.get("opinion")}
        entries = [e for e in await self.store.find(facts.LEDGER, {"month": month}) if e["type"] != "void"]
        recorded = {e["id"] for e in entries}
        return {"month": month, "reports": len(reports), "consultations": len(consultations),
                "entries": len(recorded), "missing_entries": sorted(expected - recorded),
                "entries_without_record": sorted(recorded - expected),
                "unpriced": sorted(e["id"] for e in entries if e.get("unpriced")),
                "reconciled": expected == recorded}


def compute(rows: dict[str, list[Doc]], period: Period, sites: list[Doc], levels: dict[str, str],
            consortium: Consortium, scope: Scope) -> Doc:
    requests, consultations = rows["requests"], rows["consultations"]
    if scope.reader is not None:  # a reader sees his own peer review, nothing of the sites
        return {"peer_review": indicators.peer_review(rows["reviews"], period)}
    by_centre = {}
    for centre in consortium.centres:
        mine = [r for r in requests if r.get("centre") == centre]
        by_centre[centre] = {"turnaround": indicators.turnaround(mine, period, PRIORITIES),
                             "critical": indicators.critical([r for r in rows["results"] if r.get("centre") == centre],
                                                             period)}
    return {
        "readings": indicators.readings(requests, consultations, period, sites),
        "turnaround": indicators.turnaround(requests, period, PRIORITIES),
        "critical": indicators.critical(rows["results"], period),
        "centres": [{"centre": c, "name": consortium.centres[c].name, **v} for c, v in by_centre.items()],
        "quality": indicators.quality(rows["gradings"], period),
        "peer_review": indicators.peer_review(rows["reviews"], period),
        "coverage": indicators.coverage(requests, consultations, period, levels),
        # filled from the event log by FigureViews.figures (referral_figures); not in the month-by-month trend
        "referrals": {"available": False, "note": "见当期统计 (in the period's figures)"},
        "recognition": {"available": False, "note": "见当期统计 (in the period's figures)"},
    }


def headline(figures: Doc) -> Doc:
    readings = figures.get("readings") or []
    turnaround = figures.get("turnaround") or []
    signed = sum(t["count"] for t in turnaround)
    quality = figures.get("quality") or []
    graded = sum(q["graded"] for q in quality)
    coverage = (figures.get("coverage") or {}).get("township") or {}
    return {"readings": sum(r["readings"] for r in readings),
            "consultations": sum(r["consultations"] for r in readings),
            "on_time_share": round(sum(t["on_time"] for t in turnaround) / signed, 4) if signed else None,
            "a_rate": round(sum(q["A"] for q in quality) / graded, 4) if graded else None,
            "township_coverage": coverage.get("share")}
