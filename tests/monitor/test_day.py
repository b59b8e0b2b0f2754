"""One scripted day on the embedded default, and the monitor's figures checked against the store.

A few hundred studies from five sites (some C-STOREd by DCMTK ``storescu`` into the real
gateway, the rest indexed and announced as the gateway would), clinics' requests and site
rules, readers claiming and signing through the workflow commands, and a morning burst of
STAT CTs that overloads county-imaging so the workflow overflows to city-imaging.  Then
every figure the monitor shows is recomputed from ``reading_requests``, ``reports`` and
``studies`` (the workflow's and gateway's own documents), and the read model rebuilt from
the event log into a fresh store gives the same figures.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from collections import Counter
from datetime import datetime

import numpy as np
import pytest

from services.core.store.sqlite import SqliteStore
from services.monitor import replay
from services.monitor.views import MonitorViews
from services.workflow import queries
from services.workflow.model import WORKLIST_STATES

from ..contract.adapters import mongomock_store
from ..dicom_samples import CT_IMAGE, DX_IMAGE, FINDSCU, echoscu, make_study, storescu
from ..support import wait_for
from .conftest import start_world, stop_world

DAY_START = 1_794_960_000.0  # 2026-11-18 08:00 Beijing time (00:00 UTC)
TICK = 300.0  # five simulated minutes
OPEN = ("queued", "claimed", "draft")

# (organisation, modality, kind, how it is asked for, weight)
MIX = [("chengguan-thc", "CT", "imaging", "clinic", 3), ("chengguan-thc", "DX", "imaging", "clinic", 2),
       ("chengguan-thc", "ECG", "ecg", "clinic", 1), ("dongba-thc", "DX", "imaging", "clinic", 2),
       ("dongba-thc", "US", "imaging", "clinic", 1), ("hongmiao-thc", "DX", "imaging", "site_rule", 2),
       ("zhangzhuang-vc", "ECG", "ecg", "site_rule", 2), ("lizhuang-vc", "ECG", "ecg", "site_rule", 1)]
CLINIC_OF = {"chengguan-thc": "cg-clinic", "dongba-thc": "db-clinic", "hongmiao-thc": "hm-clinic"}
# How often (in ticks) each reader finishes a reading: county-imaging is slow for its load.
READERS = {"dr-wang": 2, "dr-li": 2, "dr-zhao": 1, "dr-chen": 1, "dr-sun": 1}


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def nearest_rank(values: list[float], p: float) -> float | None:
    return float(np.percentile(values, p * 100, method="inverted_cdf")) if values else None


class Day:
    def __init__(self, world, tmp_path) -> None:
        self.world, self.tmp_path = world, tmp_path
        self.rng = random.Random(20261118)
        self.n = 0
        self.studies = 0
        self.tick_no = 0

    def uid(self) -> str:
        self.n += 1
        return f"1.2.826.0.1.7777.{self.n}"

    async def study(self, org: str, modality: str, kind: str, how: str, priority: str = "routine") -> None:
        uid = self.uid()
        await self.world.add_study(uid, org, [modality])
        self.studies += 1
        if how == "clinic":
            await self.world.request(uid, CLINIC_OF[org], kind=kind, priority=priority)

    async def arrivals(self, count: int) -> None:
        for _ in range(count):
            org, modality, kind, how, _w = self.rng.choices(MIX, weights=[m[4] for m in MIX])[0]
            priority = self.rng.choices(["routine", "urgent", "stat"], weights=[80, 17, 3])[0] if how == "clinic" \
                else "routine"
            await self.study(org, modality, kind, how, priority)

    async def readers_act(self) -> None:
        w = self.world
        for reader, every in READERS.items():
            if self.tick_no % every:
                continue
            user = w.rt.consortium.users[reader]
            held = await w.store.find("reading_requests", {"claimed_by": reader, "state": {"$in": ["claimed", "draft"]}})
            for task in held:
                await w.sign(task["id"], reader, critical=self.rng.random() < 0.03)
            head = await queries.worklist(w.store, centre=user.centre, state=("queued",), limit=1)
            if head:
                await w.claim(head[0]["id"], reader)

    async def tick(self, arrivals: int) -> None:
        self.world.clock.advance(TICK)
        self.tick_no += 1
        await self.arrivals(arrivals)
        await wait_for(self.workflow_drained, timeout=30, what="the workflow to route site-rule requests")
        await self.world.workflow.sweep()
        await self.readers_act()

    async def workflow_drained(self) -> bool:
        return (await self.world.rt.bus.lag()).get("workflow", 0) == 0


async def through_gateway(world, tmp_path, day: Day) -> int:
    """Studies C-STOREd by DCMTK storescu from two townships' modalities; each one then requested."""
    files, uids = {"CG_CT1": [], "DB_DR1": []}, []
    for i in range(8):
        ae = "CG_CT1" if i % 2 == 0 else "DB_DR1"
        study = make_study(tmp_path / f"dcm{i}", instances=1, modality="CT" if ae == "CG_CT1" else "DX",
                           sop_class_uid=CT_IMAGE if ae == "CG_CT1" else DX_IMAGE, patient_id=f"GW{i}")
        files[ae] += study.files
        uids.append((study.study_uid, "cg-clinic" if ae == "CG_CT1" else "db-clinic"))
    port = world.rt.services[0].dicom_port
    for ae, paths in files.items():
        result = await asyncio.to_thread(storescu, port, paths, calling=ae)
        assert result.returncode == 0, result.output
    assert (await asyncio.to_thread(echoscu, port, calling="CG_CT1")).returncode == 0
    # a reading workstation's C-FIND (pynetdicom's path): a success after the pending matches
    find = await asyncio.to_thread(subprocess.run, [FINDSCU, "-S", "-aet", "COUNTY_RWS1", "-aec", "YILIAN",
                                                    "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                                                    "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60)
    assert find.returncode == 0, find.stderr

    async def announced() -> bool:
        return await world.store.count("studies", {"id": {"$in": [u for u, _ in uids]}, "state": "received"}) == 8
    await wait_for(announced, timeout=30, what="the gateway to announce the stored studies")
    await wait_for(day.workflow_drained, timeout=30, what="the workflow to see the studies")
    for uid, clinic in uids:
        await world.request(uid, clinic)
    # the gateway counted its answers for /metrics: one association per calling AE, 8 C-STOREs
    async with world.session.get(world.base + "/metrics") as resp:
        lines = set((await resp.text()).splitlines())
    assert 'yilian_dimse_responses_total{command="C-STORE",status="0x0000"} 8' in lines
    assert 'yilian_dimse_responses_total{command="C-ECHO",status="0x0000"} 1' in lines
    assert 'yilian_dimse_responses_total{command="C-FIND",status="0x0000"} 1' in lines
    day.studies += 8
    return 8


async def expected_figures(world, now: float) -> dict:
    """Every figure, recomputed from the workflow's and the gateway's own documents."""
    store, consortium = world.store, world.rt.consortium
    requests = {r["id"]: r for r in await store.find("reading_requests")}
    reports = [r for r in await store.find("reports") if not r.get("addendum_of")]
    day_start = DAY_START - 8 * 3600  # local midnight
    centres = {}
    for centre in consortium.centres:
        mine = [r for r in requests.values() if r["centre"] == centre]
        open_ = [r for r in mine if r["state"] in OPEN]
        by = Counter((r["kind"], r["priority"], "waiting" if r["state"] == "queued" else "in_progress") for r in open_)
        waiting = sorted((r for r in open_ if r["state"] == "queued"), key=lambda r: (r["queued_at"], r["id"]))
        risk = Counter()
        for r in open_:
            deadline, sla = ts(r["deadline"]), ts(r["deadline"]) - ts(r["queued_at"])
            risk["past" if now >= deadline else "at_risk" if now >= deadline - 0.2 * sla else "ok"] += 1
        signed = [(ts(p["signed_at"]), ts(p["signed_at"]) - ts(requests[p["request_id"]]["queued_at"]))
                  for p in reports if p["centre"] == centre]
        today = [t for at, t in signed if at >= day_start]
        week = [t for at, t in signed if at >= now - 7 * 86400]
        claimed = Counter(r["claimed_by"] for r in open_ if r["state"] in ("claimed", "draft"))
        signed_today = Counter(p["reader_id"] for p in reports if p["centre"] == centre and ts(p["signed_at"]) >= day_start)
        centres[centre] = {
            "by": {k: v for k, v in by.items()}, "depth": len(open_),
            "oldest": waiting[0]["id"] if waiting else None,
            "oldest_seconds": round(now - ts(waiting[0]["queued_at"]), 1) if waiting else None,
            "at_risk": risk["at_risk"], "past": risk["past"],
            "today": (len(today), nearest_rank(today, 0.5), nearest_rank(today, 0.9)),
            "week": (len(week), nearest_rank(week, 0.5), nearest_rank(week, 0.9)),
            "overflow_in": sum(1 for r in requests.values() if (r.get("overflow") or {}).get("to") == centre),
            "overflow_out": sum(1 for r in requests.values() if (r.get("overflow") or {}).get("from") == centre),
            "claimed": dict(claimed), "signed_today": dict(signed_today),
        }
    studies = await store.find("studies", {"state": "received"})
    sites = {o: {"studies_sent": sum(1 for s in studies if s["organization"] == o),
                 "readings_requested": sum(1 for r in requests.values() if r["organization"] == o
                                           and r["source"] in ("clinic", "site_rule")),
                 "readings_signed": sum(1 for r in requests.values() if r["organization"] == o and r["state"] == "signed")}
             for o in consortium.organizations}
    township_of = {o: next((a for a in consortium.ancestors(o) if consortium.organizations[a].level == "township"), None)
                   for o in consortium.organizations}
    per_township = Counter(township_of[r["organization"]] for r in requests.values() if r["state"] == "signed")
    townships = [o for o, org in consortium.organizations.items() if org.level == "township"]
    week_all = [ts(p["signed_at"]) - ts(requests[p["request_id"]]["queued_at"]) for p in reports
                if ts(p["signed_at"]) >= now - 7 * 86400]
    return {"centres": centres, "sites": sites,
            "per_township": {t: per_township.get(t, 0) for t in townships},
            "served": sum(1 for t in townships if per_township.get(t)), "townships": len(townships),
            "median_7d": nearest_rank(week_all, 0.5)}


def close(a: float | None, b: float | None) -> bool:
    """Equal within the store's millisecond timestamps."""
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 0.002)


def check(shown: dict, sites: dict, k: dict, expected: dict) -> None:
    for c in shown["centres"]:
        e = expected["centres"][c["centre"]]
        by = {}
        for cell in c["queue"]["by"]:
            for col in ("waiting", "in_progress"):
                if cell[col]:
                    by[(cell["kind"], cell["priority"], col)] = cell[col]
        assert by == e["by"], c["centre"]
        assert c["queue"]["depth"] == e["depth"]
        assert (c["oldest_waiting"] or {}).get("request_id") == e["oldest"], c["centre"]
        assert (c["oldest_waiting"] or {}).get("waiting_seconds") == e["oldest_seconds"] or \
            close(c["oldest_waiting"]["waiting_seconds"], e["oldest_seconds"])
        assert (c["at_risk_count"], c["past_deadline_count"]) == (e["at_risk"], e["past"]), c["centre"]
        for window, key in (("today", "today"), ("7d", "week")):
            t = c["turnaround"][window]
            assert t["count"] == e[key][0], (c["centre"], window)
            assert close(t["p50_seconds"], e[key][1]) and close(t["p90_seconds"], e[key][2]), (c["centre"], window, t, e[key])
        assert (c["overflow"]["in"], c["overflow"]["out"]) == (e["overflow_in"], e["overflow_out"]), c["centre"]
        assert {r["reader_id"]: r["claimed"] for r in c["readers"] if r["claimed"]} == e["claimed"]
        assert {r["reader_id"]: r["signed_today"] for r in c["readers"] if r["signed_today"]} == e["signed_today"]
    for s in sites["sites"]:
        e = expected["sites"][s["organization"]]
        assert {k2: s[k2] for k2 in e} == e, s["organization"]
    assert {t["township"]: t["remote_readings"] for t in k["remote_readings_per_township"]} == expected["per_township"]
    assert (k["townships_served"], k["townships"]) == (expected["served"], expected["townships"])
    assert close(k["median_turnaround_seconds"]["7d"], expected["median_7d"])


@pytest.mark.timeout(240)
async def test_a_scripted_day_matches_the_store_and_a_replay(tmp_path):
    world, services = await start_world(tmp_path, with_gateway=True)
    try:
        day = Day(world, tmp_path)
        # Yesterday evening (20:00-22:00 local): a quiet backlog, all read before midnight.
        world.clock.now = DAY_START - 12 * 3600
        for _ in range(24):
            await day.tick(1)
        # Today from 08:00: steady arrivals, DCMTK studies, and a burst of STAT CTs at 10:00.
        world.clock.now = DAY_START
        await through_gateway(world, tmp_path, day)
        for i in range(120):
            if i == 24:
                for _ in range(14):
                    await day.study("chengguan-thc", "CT", "imaging", "clinic", priority="stat")
            await day.tick(2 if i % 3 else 3)
        # 18:00, the readers have gone home; late urgent and STAT requests wait into the evening.
        for _ in range(3):
            await day.study("dongba-thc", "DX", "imaging", "clinic", priority="urgent")
        world.clock.advance(20 * 60)
        for _ in range(2):
            await day.study("chengguan-thc", "ECG", "ecg", "clinic", priority="stat")
        world.clock.advance(80 * 60)
        await world.settle(timeout=60)
        now = world.clock()
        assert day.studies >= 300

        expected = await expected_figures(world, now)
        print({c: {k2: e[k2] for k2 in ("depth", "at_risk", "past", "today", "overflow_in", "overflow_out")}
               for c, e in expected["centres"].items()}, "events:", await world.store.last_seq())
        views = world.views
        shown, sites, k = await views.centres(), await views.sites(), await views.consortium_figures()
        check(shown, sites, k, expected)

        # The day really was busy where it should be
        county = expected["centres"]["county-imaging"]
        assert county["overflow_out"] >= 3 and expected["centres"]["city-imaging"]["overflow_in"] == county["overflow_out"]
        assert county["depth"] >= 20 and county["today"][0] >= 100
        assert expected["centres"]["county-ecg"]["today"][0] >= 50
        assert county["at_risk"] >= 3 and expected["centres"]["county-ecg"]["past"] >= 2
        assert expected["served"] == 3
        assert sum(1 for r in await world.store.find("reading_requests") if r["state"] in WORKLIST_STATES) >= 20

        # The same figures through the API, as the coordinator and the admin see them
        status, body = await world.get("/api/v1/monitor/centres", "coord-county")
        assert status == 200 and body["centres"] == [c for c in shown["centres"] if c["centre"] == "county-imaging"]

        # Rebuilt from the event log, from seq 0, into a fresh store: the same figures
        fresh = SqliteStore(f"sqlite:///{tmp_path / 'rebuilt.db'}?synchronous=OFF", validate=world.rt.validate)
        await fresh.open()
        try:
            started = time.perf_counter()
            applied = await replay(world.store, fresh, world.rt.consortium)
            assert applied == await world.store.count("handled_events", {"group": "monitor"})
            print(f"replayed {applied} events in {time.perf_counter() - started:.2f} s")
            rebuilt = MonitorViews(fresh, world.rt.consortium, world.monitor.settings)
            assert await rebuilt.centres() == shown
            assert await rebuilt.sites() == sites
            assert await rebuilt.consortium_figures() == k
            assert await replay(world.store, fresh, world.rt.consortium) == 0  # idempotent
        finally:
            await fresh.close()
        # ... and into the MongoDB adapter (mongomock): the same filters, the same figures
        async with mongomock_store(tmp_path) as mongo:
            await replay(world.store, mongo, world.rt.consortium)
            rebuilt = MonitorViews(mongo, world.rt.consortium, world.monitor.settings)
            assert await rebuilt.centres() == shown
            assert await rebuilt.sites() == sites
            assert await rebuilt.consortium_figures() == k
    finally:
        await stop_world(world, services)
