"""The figures and the ledger off the real code paths: the workflow grades, signs and returns
through its commands (the quality branch's grading included), the monitor consumes the events
off the bus, and the figures, statement and reconciliation follow."""

from __future__ import annotations

from services.monitor.figure_views import FigureViews, Scope
from services.workflow import commands as c
from services.workflow.service import execute

CT = "1.2.826.0.1.700."


async def test_graded_signed_and_returned_readings_in_the_figures_and_the_ledger(world):
    for i in (1, 2):
        await world.add_study(f"{CT}{i}", "chengguan-thc", ["CT"])
    await world.settle()
    good = await world.request(f"{CT}1", "cg-clinic")
    poor = await world.request(f"{CT}2", "cg-clinic")
    for rid in (good["id"], poor["id"]):
        await world.claim(rid, "dr-wang")
    world.clock.advance(600)
    await execute(world.rt, c.GradeQuality(good["id"], "A"), actor=world.who("dr-wang"))
    signed = await world.sign(good["id"], "dr-wang")
    returned = await execute(world.rt, c.GradeQuality(poor["id"], "reject", reasons=("motion",), comment="运动伪影"),
                             actor=world.who("dr-wang"))
    assert returned["state"] == "returned"  # a 废片 goes back for a re-scan: nothing to bill
    await world.settle()

    views = FigureViews(world.store, world.rt.consortium, world.rt.local_time)
    figures = await views.figures("2026-11", Scope())
    cell = next(q for q in figures["quality"] if q["organization"] == "chengguan-thc")
    assert (cell["graded"], cell["A"], cell["reject"], cell["a_rate"], cell["reject_rate"]) == (2, 1, 1, 0.5, 0.5)
    assert cell["reasons"] == {"motion": 1} and cell["comments"][0]["comment"] == "运动伪影"
    site = next(s for s in figures["readings"] if s["organization"] == "chengguan-thc")
    assert (site["imaging"], site["readings"]) == (1, 1)
    routine = next(t for t in figures["turnaround"] if t["priority"] == "routine")
    assert (routine["count"], routine["p50_seconds"], routine["on_time"]) == (1, 600.0, 1)

    statement = await views.statement("2026-11", Scope())
    assert statement["lines"] == [{**statement["lines"][0], "requesting": "chengguan-thc", "reading": "county-hospital",
                                   "entries": 1, "fee_fen": 8000, "reading_fen": 6000, "requesting_fen": 2000}]
    reconciliation = await views.reconciliation("2026-11")
    assert reconciliation["reconciled"] and reconciliation["entries"] == 1
    entry = (await views.ledger("2026-11", Scope()))[0]
    assert entry["report_id"] == signed["report_id"] and entry["modality"] == "CT"
