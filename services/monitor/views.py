"""Reading the read model: every figure the API, the dashboard and ``/metrics`` show.

Reads only the monitor's own collections (and the consortium for names and rosters), so
it answers in any process that shares the monitor's store, whether or not the monitor
service runs there.
"""

from __future__ import annotations

from typing import Any

from ..core.consortium import PRIORITIES, Consortium
from ..core.localtime import LocalTime
from ..core.runtime import Runtime
from ..core import duty
from ..core.store.port import Store
from . import figures
from .figures import Window
from .readmodel import FINAL, OPEN, REQUESTS, RESULTS, STUDIES, TOTALS, TURNAROUND_BUCKETS, iso
from .service import META, MonitorSettings, settings_of

Doc = dict[str, Any]


def window(settings: MonitorSettings, local_time: LocalTime) -> Window:
    return Window.at(settings.clock(), local_time.tz, risk_fraction=settings.sla_risk_fraction)


def township_of(consortium: Consortium, org_id: str) -> str | None:
    """The township (枢纽) an origin belongs to: itself, or the township above a village clinic."""
    if org_id not in consortium.organizations:
        return None
    for ancestor in consortium.ancestors(org_id):
        if consortium.organizations[ancestor].level == "township":
            return ancestor
    return None


class MonitorViews:
    def __init__(self, store: Store, consortium: Consortium, settings: MonitorSettings,
                 local_time: LocalTime | None = None) -> None:
        self.store, self.consortium, self.settings = store, consortium, settings
        # The consortium's zone: "today" and the trend's hours; the dashboard shows times in it too.
        self.local_time = local_time or LocalTime.named(consortium.timezone)

    @classmethod
    def of(cls, rt: Runtime) -> MonitorViews:
        return cls(rt.store, rt.consortium, settings_of(rt), rt.local_time)

    def window(self) -> Window:
        return window(self.settings, self.local_time)

    async def marker(self) -> str | None:
        meta = await self.store.get(META, "state")
        return meta["marker"] if meta else None

    async def centre(self, centre_id: str, win: Window | None = None) -> Doc:
        win = win or self.window()
        centre = self.consortium.centres[centre_id]
        open_rows = await self.store.find(REQUESTS, {"centre": centre_id, "state": {"$in": list(OPEN)}})
        recent = await self.store.find(REQUESTS, {"centre": centre_id, "$or": [
            {"signed_at": {"$gte": iso(win.week_start)}},
            {"closed_at": {"$gte": iso(win.now - figures.DAY)}, "state": {"$in": list(FINAL)}}]})
        results = await self.store.find(RESULTS, {"centre": centre_id, "$or": [
            {"dead_lettered": True}, {"critical_unacknowledged": True}]}, sort=(("signed_at", 1),))
        # who is on duty now: the centre's duty roster (day and night shifts), or the file's on_duty flags
        on_duty = await duty.readers_on_duty(self.store, self.consortium, centre_id, iso(win.now))
        users = self.consortium.users
        roster = [{"id": r, "name": users[r].name if r in users else r, "on_duty": True} for r in on_duty]
        day = iso(win.day_start)
        overflow = {"in": await self.store.count(REQUESTS, {"overflow_to": centre_id}),
                    "out": await self.store.count(REQUESTS, {"overflow_from": centre_id}),
                    "in_today": await self.store.count(REQUESTS, {"overflow_to": centre_id, "overflow_at": {"$gte": day}}),
                    "out_today": await self.store.count(REQUESTS, {"overflow_from": centre_id,
                                                                   "overflow_at": {"$gte": day}})}
        info = {"id": centre.id, "name": centre.name, "kinds": centre.kinds}
        return figures.centre(info, open_rows, recent, results, roster, overflow, win, priorities=PRIORITIES)

    async def centres(self, ids: list[str] | None = None) -> Doc:
        win = self.window()
        ids = ids if ids is not None else list(self.consortium.centres)
        return {"now": iso(win.now), "day_start": iso(win.day_start), "timezone": self.local_time.name,
                "centres": [await self.centre(c, win) for c in ids]}

    async def sites(self) -> Doc:
        win = self.window()
        day = iso(win.day_start)
        out = []
        for org in self.consortium.organizations.values():
            where = {"organization": org.id}
            out.append({
                "organization": org.id, "name": org.name, "level": org.level,
                "township": township_of(self.consortium, org.id),
                "studies_sent": await self.store.count(STUDIES, {**where, "received": True}),
                "studies_sent_today": await self.store.count(STUDIES, {**where, "received": True,
                                                                       "first_received_at": {"$gte": day}}),
                "readings_requested": await self.store.count(
                    REQUESTS, {**where, "source": {"$in": ["clinic", "site_rule", "order"]}}),
                "readings_signed": await self.store.count(REQUESTS, {**where, "state": "signed"}),
                "results_delivered": await self.store.count(RESULTS, {**where, "delivered_at": {"$gt": ""}}),
                "results_acknowledged": await self.store.count(RESULTS, {**where, "acknowledged_at": {"$gt": ""}}),
            })
        return {"now": iso(win.now), "timezone": self.local_time.name, "sites": out}

    async def consortium_figures(self) -> Doc:
        win = self.window()
        townships = [o.id for o in self.consortium.organizations.values() if o.level == "township"]
        per_township = {t: {"township": t, "name": self.consortium.organizations[t].name, "remote_readings": 0,
                            "remote_readings_today": 0} for t in townships}
        day = iso(win.day_start)
        for org in self.consortium.organizations:
            township = township_of(self.consortium, org)
            if township is None:
                continue
            per_township[township]["remote_readings"] += await self.store.count(
                REQUESTS, {"organization": org, "state": "signed"})
            per_township[township]["remote_readings_today"] += await self.store.count(
                REQUESTS, {"organization": org, "state": "signed", "signed_at": {"$gte": day}})
        served = sum(1 for t in per_township.values() if t["remote_readings"] > 0)
        week = await self.store.find(REQUESTS, {"signed_at": {"$gte": iso(win.week_start)}})
        return {
            "now": iso(win.now), "timezone": self.local_time.name,
            "remote_readings_per_township": list(per_township.values()),
            "townships": len(townships), "townships_served": served,
            "share_of_townships_served": served / len(townships) if townships else None,
            "median_turnaround_seconds": {"today": figures.turnaround(week, win.day_start)["p50_seconds"],
                                          "7d": figures.turnaround(week, win.week_start)["p50_seconds"]},
            "signed_today": sum(1 for r in week if r["signed_at"] >= day),
        }

    async def queue_rows(self) -> list[Doc]:
        return await self.store.find(REQUESTS, {"state": {"$in": list(OPEN)}})

    async def turnaround_totals(self) -> list[Doc]:
        return await self.store.find(TOTALS, sort=(("id", 1),))

    async def open_problems(self) -> list[Doc]:
        return await self.store.find(RESULTS, {"$or": [{"dead_lettered": True}, {"critical_unacknowledged": True}]})


__all__ = ["MonitorViews", "TURNAROUND_BUCKETS", "township_of", "window"]
