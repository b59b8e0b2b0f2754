"""Issue 18's proof: a scripted month (November 2026, Beijing time, on the manual clock).

2,000 studies across every site are read (queued, signed, some critical and acknowledged,
some overflowed to the city centre), graded for image quality, sampled for peer review (some
significant discrepancies, arbitrated), with consultations.  The events are built to the
schemas (quality's by the issue's contract, ``contract_events/`` until that branch lands) and
written through the store's outbox, so the monitor consumes them off the bus like any other.
Then:

* every figure equals one recomputed here, independently, from the generated month;
* a replay of the log into a fresh store gives the very same figures and ledger;
* the statement totals equal the fee schedule applied to the released reports, and the ledger
  reconciles with the workflow's reports both ways;
* closing the month freezes its statement: a late report, an addendum and a cancellation
  made afterwards go to December.
"""

from __future__ import annotations

import csv
import io
import math
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook

from services.core.events import Event, registry
from services.core.runtime import make_store
from services.monitor import replay
from services.monitor.figure_views import FigureViews, Scope

from .conftest import start_world, stop_world

CONTRACT = Path(__file__).parent / "contract_events"
REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
BEIJING = timedelta(hours=8)
MONTH_START = datetime(2026, 11, 1, tzinfo=UTC) - BEIJING  # local midnight, 1 November
DECEMBER_3 = datetime(2026, 12, 3, 2, tzinfo=UTC).timestamp()
SLA = {("imaging", "stat"): 1800, ("imaging", "urgent"): 7200, ("imaging", "routine"): 86400,
       ("ecg", "stat"): 900, ("ecg", "urgent"): 3600, ("ecg", "routine"): 43200}
# The example consortium's fee schedule, written out again here (fen; reading share).
FEES = {"DX": (3000, 0.70), "US": (4000, 0.70), "CT": (8000, 0.75), "ECG": (1500, 0.60),
        "consultation": (12000, 0.80)}
SITES = {"chengguan-thc": ["DX", "US", "CT", "ECG"], "dongba-thc": ["DX", "US", "ECG"],
         "hongmiao-thc": ["DX", "ECG"], "lizhuang-vc": ["ECG"], "county-hospital": ["CT"]}
READERS = {"county-imaging": ["dr-wang", "dr-li", "dr-zhou"], "county-ecg": ["dr-zhao"],
           "city-imaging": ["dr-chen"], "city-ecg": ["dr-sun"]}
CENTRE_ORG = {"county-imaging": "county-hospital", "county-ecg": "county-hospital", "city-imaging": "city-hospital",
              "city-ecg": "city-hospital"}
TECHS = ["王技师", "李技师", "张技师"]


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def nearest_rank(values: list[float], p: float) -> float | None:
    values = sorted(values)
    return values[max(1, math.ceil(p * len(values))) - 1] if values else None


@pytest.fixture
async def month_world(tmp_path, monkeypatch):
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO_SCHEMAS, schemas)
    for path in CONTRACT.glob("*.json"):  # the quality branch's own schemas win once they exist
        if not (schemas / "events" / path.name).exists():
            shutil.copy(path, schemas / "events" / path.name)
    monkeypatch.setenv("YILIAN_SCHEMAS_DIR", str(schemas))
    registry.cache_clear()
    world, services = await start_world(tmp_path)
    world.clock.now = DECEMBER_3
    try:
        yield world
    finally:
        await stop_world(world, services)
        registry.cache_clear()


def script(rng: random.Random, n: int = 2000) -> dict:
    """The month: readings with their reports, gradings, reviews, consultations (ground truth)."""
    readings, gradings, reviews, consultations = [], [], [], []
    orgs = list(SITES)
    weights = [6, 4, 3, 2, 1]
    for i in range(n):
        org = rng.choices(orgs, weights)[0]
        modality = rng.choice(SITES[org])
        kind = "ecg" if modality == "ECG" else "imaging"
        priority = rng.choices(["stat", "urgent", "routine"], [1, 2, 7])[0]
        centre = "county-ecg" if kind == "ecg" else "county-imaging"
        overflow = None
        if kind == "imaging" and rng.random() < 0.08:  # the night gap: overflow to the city centre
            overflow, centre = {"from": "county-imaging", "to": "city-imaging", "reason": "无人值班"}, "city-imaging"
        sla = SLA[(kind, priority)]
        queued = MONTH_START + timedelta(seconds=rng.randrange(0, 28 * 86400))  # signed in November too
        took = rng.uniform(0.05, 1.3) * sla
        signed = queued + timedelta(seconds=round(took, 3))
        critical = rng.random() < 0.03
        acked = signed + timedelta(seconds=rng.randrange(60, 3600)) if critical and rng.random() < 0.8 else None
        r = {"request_id": f"rr-{i:04d}", "report_id": f"rp-{i:04d}", "study_uid": f"1.2.156.9.{i}",
             "organization": org, "modality": modality, "kind": kind, "priority": priority, "centre": centre,
             "overflow": overflow, "queued_at": iso(queued), "deadline": iso(queued + timedelta(seconds=sla)),
             "signed_at": iso(signed), "turnaround": round((signed - queued).total_seconds(), 3),
             "reader": rng.choice(READERS[centre]), "critical": critical, "acknowledged_at": iso(acked) if acked else None,
             "source": "site_rule" if org == "lizhuang-vc" else "clinic"}
        readings.append(r)
        if kind == "imaging" and rng.random() < 0.9:
            grade = rng.choices(["A", "B", "C", "reject"], [70, 20, 7, 3])[0]
            graded = signed + timedelta(seconds=30)
            operators = [] if rng.random() < 0.1 else [rng.choice(TECHS)]
            gradings.append({"reading_id": r["request_id"], "study_instance_uid": r["study_uid"], "organization": org,
                             "modality": modality, "operators": operators, "grade": grade,
                             "reasons": [] if grade == "A" else [rng.choice(["positioning", "exposure", "motion"])],
                             "reader": r["reader"], "centre": centre, "graded_at": iso(graded),
                             **({"comment": "体位不正"} if grade in ("C", "reject") else {})})
            if rng.random() < 0.05:  # a regrade: the later one counts
                gradings.append({**gradings[-1], "grade": "B", "graded_at": iso(graded + timedelta(hours=1))})
        if critical or rng.random() < 0.05:
            score = rng.choices([1, 2, 3], [85, 10, 5])[0]
            review = {"review_id": f"pr-{i:04d}", "report_id": r["report_id"], "reading_id": r["request_id"],
                      "original_reader": r["reader"], "original_centre": centre,
                      "reason": "critical" if critical else "random", "sampled_at": iso(signed + timedelta(hours=2)),
                      "scored": rng.random() < 0.9, "score": score, "clinically_significant": score == 3,
                      "upheld": rng.random() < 0.5 if score == 3 else None}
            reviews.append(review)
    for j in range(40):
        org = rng.choice(["chengguan-thc", "dongba-thc", "county-hospital"])
        requested = MONTH_START + timedelta(seconds=rng.randrange(0, 27 * 86400))
        consultations.append({"consultation_id": f"cs-{j:03d}", "opinion_id": f"co-{j:03d}", "organization": org,
                              "requested_at": iso(requested), "signed_at": iso(requested + timedelta(days=1)),
                              "lead": "dr-chen", "centre": "city-imaging"})
    return {"readings": readings, "gradings": gradings, "reviews": reviews, "consultations": consultations}


def events_of(month: dict) -> list[Event]:
    out = []
    for r in month["readings"]:
        base = {"request_id": r["request_id"], "study_uid": r["study_uid"], "organization": r["organization"],
                "kind": r["kind"], "priority": r["priority"], "actor": "system:workflow"}
        out.append(Event("reading.requested", subject=r["request_id"], source="/yilian/workflow", data={
            **base, "state": "requested", "centre": None, "source": r["source"], "waiting": False}))
        out.append(Event("reading.queued", subject=r["request_id"], source="/yilian/workflow", data={
            **base, "state": "queued", "centre": r["centre"], "deadline": r["deadline"],
            "routed_centre": "county-ecg" if r["kind"] == "ecg" else "county-imaging", "overflow": r["overflow"],
            "modality": r["modality"]}))
        out.append(signed_event(r))
        if r["acknowledged_at"]:
            out.append(Event("result.acknowledged", subject=r["report_id"], source="/yilian/delivery", data={
                "result_id": r["report_id"], "report_id": r["report_id"], "request_id": r["request_id"],
                "organization": r["organization"], "critical": True, "acknowledged_by": "cg-clinic",
                "mode": "person", "acknowledged_at": r["acknowledged_at"], "late": False}))
    for g in month["gradings"]:
        out.append(Event("study.quality_graded", subject=g["reading_id"], source="/yilian/workflow", data=g))
    for v in month["reviews"]:
        common = {k: v[k] for k in ("review_id", "report_id", "original_reader", "original_centre")}
        out.append(Event("peer_review.sampled", subject=v["review_id"], source="/yilian/workflow", data={
            **common, "reading_id": v["reading_id"], "reason": v["reason"], "reviewer": None,
            "sampled_at": v["sampled_at"]}))
        if v["scored"]:
            out.append(Event("peer_review.scored", subject=v["review_id"], source="/yilian/workflow", data={
                **common, "reviewer": "dr-chen", "reviewer_centre": "city-imaging", "score": v["score"],
                "clinically_significant": v["clinically_significant"], "comment": "复核意见",
                "scored_at": v["sampled_at"]}))
            if v["score"] == 3:
                out.append(Event("peer_review.arbitrated", subject=v["review_id"], source="/yilian/workflow", data={
                    "review_id": v["review_id"], "upheld": v["upheld"], "lead": "dr-chen", "comment": "仲裁意见",
                    "arbitrated_at": v["sampled_at"]}))
    for c in month["consultations"]:
        base = {"consultation_id": c["consultation_id"], "organization": c["organization"], "centre": c["centre"],
                "actor": "cg-clinic", "urgency": "routine", "requested_at": c["requested_at"]}
        out.append(Event("consultation.requested", subject=c["consultation_id"], source="/yilian/workflow", data={
            **base, "state": "requested", "study_uids": [], "preferred_windows": [], "requested_specialist": None}))
        out.append(Event("consultation.concluded", subject=c["consultation_id"], source="/yilian/workflow", data={
            **base, "state": "concluded", "opinion_id": c["opinion_id"], "study_uids": [], "patient_id": None,
            "patient_name": None, "signed_at": c["signed_at"], "signers": [{"id": "dr-chen", "name": "陈志强"}],
            "assessment": "会诊意见", "recommendations": {"disposition": "manage_locally", "text": "继续观察"},
            "critical": False, "lead": c["lead"]}))
    return out


def signed_event(r: dict, *, report_id: str | None = None, addendum_of: str | None = None,
                 signed_at: str | None = None) -> Event:
    return Event("report.signed", subject=r["request_id"], source="/yilian/workflow", data={
        "request_id": r["request_id"], "report_id": report_id or r["report_id"], "study_uid": r["study_uid"],
        "organization": r["organization"], "centre": r["centre"], "kind": r["kind"], "priority": r["priority"],
        "state": "signed", "actor": r["reader"], "reader_id": r["reader"], "reader_name": r["reader"],
        "signed_at": signed_at or r["signed_at"], "findings": "所见", "impression": "印象", "critical": r["critical"],
        "critical_category": "气胸" if r["critical"] else None, "addendum_of": addendum_of,
        "patient_id": None, "patient_name": None, "modality": r["modality"]})


async def write_month(world, month: dict) -> None:
    """What the workflow keeps (reports, consultations) and the events it and delivery emit, in batches.

    The bus is paused meanwhile and the monitor's projection applies the month with its own
    replay (one transaction per 500 events, the same ``apply_in`` its consumer runs): consuming
    ~10,000 events one transaction each took minutes on the shared machine.  The consumers then
    resume after the month, and everything later in the test goes through them live."""
    await world.rt.bus.stop()
    events = events_of(month)
    for start in range(0, len(events), 500):
        async with world.store.transaction() as tx:
            for event in events[start:start + 500]:
                tx.emit(event)
    async with world.store.transaction() as tx:
        for r in month["readings"]:
            await tx.put("reports", {"id": r["report_id"], "request_id": r["request_id"], "signed_at": r["signed_at"],
                                     "organization": r["organization"], "centre": r["centre"], "addendum_of": None})
        for c in month["consultations"]:
            await tx.put("consultations", {"id": c["consultation_id"], "organization": c["organization"],
                                           "concluded_at": c["signed_at"], "opinion": {"id": c["opinion_id"]}})
    await replay(world.store, world.store, world.rt.consortium, tz=world.rt.local_time.tz)
    last = await world.store.last_seq()
    for group in {sub.group for sub in world.rt.bus.subscriptions}:
        await world.store.set_offset(group, last)  # the workflow has nothing to do with this history
    await world.rt.bus.start()


def expected_figures(month: dict) -> dict:
    """The month's figures recomputed from the ground truth, without the projection."""
    readings = month["readings"]
    per_site: dict[str, dict] = {}
    for r in readings:
        site = per_site.setdefault(r["organization"], {"imaging": 0, "ecg": 0, "consultations": 0})
        site[r["kind"]] += 1
    for c in month["consultations"]:
        per_site.setdefault(c["organization"], {"imaging": 0, "ecg": 0, "consultations": 0})["consultations"] += 1
    turnaround = {}
    for p in ("stat", "urgent", "routine"):
        mine = [r for r in readings if r["priority"] == p]
        values = [r["turnaround"] for r in mine]
        on_time = sum(r["signed_at"] <= r["deadline"] for r in mine)
        turnaround[p] = (len(mine), nearest_rank(values, 0.5), nearest_rank(values, 0.9), on_time)
    critical = [r for r in readings if r["critical"]]
    waits = [(datetime.fromisoformat(r["acknowledged_at"][:-1]) - datetime.fromisoformat(r["signed_at"][:-1]))
             .total_seconds() for r in critical if r["acknowledged_at"]]
    latest = {}
    for g in month["gradings"]:
        if g["reading_id"] not in latest or latest[g["reading_id"]]["graded_at"] <= g["graded_at"]:
            latest[g["reading_id"]] = g
    quality: dict[tuple, list[int]] = {}
    for g in latest.values():
        for tech in g["operators"] or [""]:
            cell = quality.setdefault((g["organization"], g["modality"], tech), [0, 0, 0])
            cell[0] += 1
            cell[1] += g["grade"] == "A"
            cell[2] += g["grade"] == "reject"
    peer: dict[str, list[int]] = {}
    for v in month["reviews"]:
        cell = peer.setdefault(v["original_reader"], [0, 0, 0, 0, 0])
        cell[0] += 1
        if v["scored"]:
            cell[1] += 1
            cell[2] += v["score"] == 1
            cell[3] += v["score"] == 3
            cell[4] += bool(v["upheld"]) if v["score"] == 3 else 0
    used = {r["organization"] for r in readings} | {c["organization"] for c in month["consultations"]}
    return {"per_site": per_site, "turnaround": turnaround, "critical": (len(critical), len(waits),
            nearest_rank(waits, 0.5), nearest_rank(waits, 0.9)), "quality": quality, "peer": peer, "used": used}


def fee_of(modality: str) -> tuple[int, int]:
    fee, share = FEES[modality]
    reading = int(fee * share + 0.5)
    return fee, reading


async def test_a_scripted_month(month_world, tmp_path):
    world = month_world
    month = script(random.Random(18))
    await write_month(world, month)
    await world.settle(timeout=240)
    views = FigureViews(world.store, world.rt.consortium, world.rt.local_time)
    figures = await views.figures("2026-11", Scope())
    want = expected_figures(month)

    # readings and consultations per site
    got_sites = {s["organization"]: s for s in figures["readings"]}
    for org, counts in want["per_site"].items():
        site = got_sites[org]
        assert (site["imaging"], site["ecg"], site["consultations"]) == (
            counts["imaging"], counts["ecg"], counts["consultations"]), org
    assert sum(s["readings"] for s in figures["readings"]) == 2000
    # turnaround against the SLA, by priority
    for line in figures["turnaround"]:
        count, p50, p90, on_time = want["turnaround"][line["priority"]]
        assert (line["count"], line["p50_seconds"], line["p90_seconds"], line["on_time"]) == (count, p50, p90, on_time)
        assert line["on_time_share"] == round(on_time / count, 4)
    # critical findings and time to acknowledgement
    crit = figures["critical"]
    assert (crit["count"], crit["acknowledged"], crit["p50_ack_seconds"], crit["p90_ack_seconds"]) == want["critical"]
    # image quality: 甲片率 and 废片率 per site × modality × technician (the latest grade per reading)
    got_quality = {(q["organization"], q["modality"], q["technician"]): q for q in figures["quality"]}
    assert set(got_quality) == set(want["quality"])
    for key, (graded, a, reject) in want["quality"].items():
        q = got_quality[key]
        assert (q["graded"], q["A"], q["reject"]) == (graded, a, reject), key
        assert q["a_rate"] == round(a / graded, 4) and q["reject_rate"] == round(reject / graded, 4)
    # peer review per reader
    got_peer = {p["reader"]: p for p in figures["peer_review"]}
    for reader, (sampled, scored, agree, significant, upheld) in want["peer"].items():
        p = got_peer[reader]
        assert (p["sampled"], p["scored"], p["agree"], p["significant"], p["upheld"]) == (
            sampled, scored, agree, significant, upheld), reader
    assert sum(p["significant"] for p in figures["peer_review"]) > 0
    # coverage: three townships of three, one village clinic (李庄) of two
    cov = figures["coverage"]
    assert (cov["township"]["served"], cov["township"]["total"]) == (3, 3)
    assert (cov["village"]["served"], cov["village"]["total"], cov["village"]["share"]) == (1, 2, 0.5)
    assert cov["village"]["not_served_ids"] == ["zhangzhuang-vc"]
    assert figures["referrals"]["available"] in (False, True)

    # settlement: the fee schedule applied to every released report and consultation
    statement = await views.statement("2026-11", Scope())
    want_fee = want_reading = 0
    for r in month["readings"]:
        fee, reading = fee_of(r["modality"])
        want_fee, want_reading = want_fee + fee, want_reading + reading
    for _ in month["consultations"]:
        fee, reading = fee_of("consultation")
        want_fee, want_reading = want_fee + fee, want_reading + reading
    assert statement["totals"] == {"entries": 2040, "fee_fen": want_fee, "reading_fen": want_reading,
                                   "requesting_fen": want_fee - want_reading}
    pairs = {(line["requesting"], line["reading"]) for line in statement["lines"]}
    assert ("lizhuang-vc", "county-hospital") in pairs and ("chengguan-thc", "city-hospital") in pairs
    reconciliation = await views.reconciliation("2026-11")
    assert reconciliation["reconciled"] and reconciliation["entries"] == 2040 and not reconciliation["unpriced"]

    # a replay of the log into a fresh store: the same figures, the same statement
    fresh = make_store(f"sqlite:///{tmp_path / 'fresh.db'}", world.rt.schemas.validate)
    await fresh.open()
    try:
        assert await replay(world.store, fresh, world.rt.consortium, tz=world.rt.local_time.tz) == len(events_of(month))
        again = FigureViews(fresh, world.rt.consortium, world.rt.local_time)
        assert await again.figures("2026-11", Scope()) == figures
        assert await again.statement("2026-11", Scope()) == statement
    finally:
        await fresh.close()

    # over HTTP: a township sees its own subtree; the health commission (auditor) all; CSV and XLSX
    status, mine = await world.get("/api/v1/figures?period=2026-11", "hm-clinic")
    assert status == 200
    assert {s["organization"] for s in mine["readings"]} == {"hongmiao-thc", "lizhuang-vc"}
    assert {q["organization"] for q in mine["quality"]} <= {"hongmiao-thc"} and mine["peer_review"] == []
    status, everything = await world.get("/api/v1/figures?period=2026-11", "auditor")
    assert status == 200 and everything["readings"] == figures["readings"]
    status, own = await world.get("/api/v1/figures?period=2026-11", "dr-zhao")
    assert status == 200 and set(own) >= {"peer_review"} and "readings" not in own
    assert all(p["reader"] == "dr-zhao" for p in own["peer_review"])
    status, problem = await world.get("/api/v1/figures?period=2026-13", "admin")
    assert status == 400 and "2026-13" in problem["detail"]
    headers = {"Authorization": f"Bearer {world.token('auditor')}"}
    async with world.session.get(world.base + "/api/v1/figures/export?period=2026-11&format=xlsx",
                                 headers=headers) as resp:
        assert resp.status == 200
        book = load_workbook(io.BytesIO(await resp.read()))
    sheet = book["readings"]
    header = [c.value for c in sheet[1]]
    total = sum(row[header.index("远程诊断合计 readings")] for row in sheet.iter_rows(min_row=2, values_only=True))
    assert total == 2000 and set(book.sheetnames) >= {"turnaround", "quality", "peer_review", "coverage"}
    async with world.session.get(world.base + "/api/v1/figures/export?period=2026-11&format=csv&section=quality",
                                 headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    assert rows[0][0] == "机构 site" and len(rows) == 1 + len(figures["quality"])

    # close November: its statement freezes; what comes later goes to December
    async with world.session.post(world.base + "/api/v1/settlement/months/2026-11/close",
                                  headers={"Authorization": f"Bearer {world.token('admin')}"}) as resp:
        assert resp.status == 202, await resp.text()
    await world.settle()
    frozen = await views.statement("2026-11", Scope())
    assert frozen["closed"] and frozen["lines"] == statement["lines"]
    async with world.session.post(world.base + "/api/v1/settlement/months/2026-11/close",
                                  headers={"Authorization": f"Bearer {world.token('admin')}"}) as resp:
        assert resp.status == 409
    first, late = month["readings"][0], {**month["readings"][1], "report_id": "rp-late"}
    async with world.store.transaction() as tx:
        tx.emit(signed_event(first, report_id="rp-addendum", addendum_of=first["report_id"],
                             signed_at="2026-12-02T02:00:00.000Z"))
        tx.emit(signed_event(late, signed_at="2026-11-29T02:00:00.000Z"))  # released in November, seen late
    async with world.session.post(world.base + f"/api/v1/settlement/entries/report:{month['readings'][2]['report_id']}"
                                  "/void", json={"reason": "重复收费"},
                                  headers={"Authorization": f"Bearer {world.token('admin')}"}) as resp:
        assert resp.status == 202, await resp.text()
    await world.settle()
    status, november = await world.get("/api/v1/settlement/statements?month=2026-11", "admin")
    assert status == 200 and november["closed"] and november["totals"] == statement["totals"]
    status, december = await world.get("/api/v1/settlement/ledger?month=2026-12", "admin")
    by_id = {e["id"]: e for e in december["entries"]}
    assert by_id["report:rp-late"]["late"] and by_id["report:rp-late"]["month"] == "2026-11"
    assert by_id["report:rp-addendum"]["type"] == "addendum" and by_id["report:rp-addendum"]["fee_fen"] == 0
    void = by_id[f"void:report:{month['readings'][2]['report_id']}"]
    assert void["fee_fen"] == -fee_of(month["readings"][2]["modality"])[0]
    status, dec_statement = await world.get("/api/v1/settlement/statements?month=2026-12", "admin")
    assert dec_statement["totals"]["entries"] == 3 and not dec_statement["closed"]
    async with world.session.get(world.base + "/api/v1/settlement/export?month=2026-11&format=csv",
                                 headers={"Authorization": f"Bearer {world.token('auditor')}"}) as resp:
        assert resp.status == 200
        rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    assert len(rows) == 1 + len(statement["lines"])
