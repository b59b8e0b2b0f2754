"""Worklists: order, filters, SLA-aware overflow and a coordinator's manual move."""

from __future__ import annotations

import pytest

from services.workflow import queries
from services.workflow.commands import Claim, MoveToCentre, RequestReading
from services.workflow.errors import IllegalTransition, Invalid, NotFound
from services.workflow.service import execute


async def request(world, n: int, *, org="chengguan-thc", clinic="cg-clinic", modality="CT", kind="imaging",
                  priority="routine", **kw) -> dict:
    uid = f"1.2.826.0.1.3680043.8.498.{1000 + n}"
    await world.add_study(uid, org, [modality], announce=False)
    return await execute(world.rt, RequestReading(uid, kind, priority, f"case {n}", **kw), actor=world.who(clinic))


async def test_worklist_order_priority_then_boosts_then_deadline(world):
    ids = {}
    ids["routine_green"] = (await request(world, 1, green_channel="卒中"))["id"]
    world.clock.advance(60)
    ids["urgent_late"] = (await request(world, 2, priority="urgent"))["id"]
    ids["urgent_resident"] = (await request(world, 3, priority="urgent", signed_resident=True))["id"]
    world.clock.advance(-120)  # an earlier request time: an earlier deadline
    ids["urgent_early"] = (await request(world, 4, priority="urgent"))["id"]
    world.clock.advance(600)
    ids["urgent_green"] = (await request(world, 5, priority="urgent", green_channel="胸痛"))["id"]
    ids["routine"] = (await request(world, 6))["id"]
    ids["stat"] = (await request(world, 7, priority="stat"))["id"]
    ids["other_centre"] = (await request(world, 8, modality="ECG", kind="ecg", priority="stat"))["id"]

    listed = await queries.worklist(world.store, centre="county-imaging")
    names = {v: k for k, v in ids.items()}
    assert [names[d["id"]] for d in listed] == ["stat", "urgent_green", "urgent_resident", "urgent_early",
                                                "urgent_late", "routine_green", "routine"]
    # Filters and paging.
    assert [names[d["id"]] for d in await queries.worklist(world.store, centre="county-imaging",
                                                           priority="urgent", limit=2, offset=1)] == \
        ["urgent_resident", "urgent_early"]
    assert [d["id"] for d in await queries.worklist(world.store, centre="county-ecg", kind="ecg")] == \
        [ids["other_centre"]]
    assert await queries.worklist(world.store, centre="county-imaging", modality="DX") == []
    assert len(await queries.worklist(world.store, centre="county-imaging", origin="chengguan-thc")) == 7
    # A claimed task stays on the worklist (state filter decides).
    await execute(world.rt, Claim(ids["stat"]), actor=world.who("dr-wang"))
    queued_only = await queries.worklist(world.store, centre="county-imaging", state=("queued",))
    assert ids["stat"] not in [d["id"] for d in queued_only] and len(queued_only) == 6


async def test_overflow_when_the_county_centre_cannot_meet_a_stat_deadline(world):
    # County imaging: 2 readers on duty x 8 per hour = 16 per hour, so 8 STAT reads fill its 30 min SLA.
    kept = [await request(world, n, priority="stat") for n in range(8)]
    assert {d["centre"] for d in kept} == {"county-imaging"} and not any(d["overflow"] for d in kept)
    ninth = await request(world, 8, priority="stat")
    assert ninth["centre"] == "city-imaging" and ninth["routed_centre"] == "county-imaging"
    assert ninth["overflow"]["from"] == "county-imaging" and ninth["overflow"]["to"] == "city-imaging"
    assert "SLA is 30 min" in ninth["overflow"]["reason"] and "8 ahead" in ninth["overflow"]["reason"]
    assert ninth["moves"][0]["manual"] is False
    queued = [e for e in await world.events(subject=ninth["id"]) if e.type == "reading.queued"][0]
    assert queued.data["centre"] == "city-imaging" and queued.data["overflow"]["from"] == "county-imaging"
    # A routine request still fits at the county (it queues behind the STATs but has 24 h).
    routine = await request(world, 9)
    assert routine["centre"] == "county-imaging" and routine["overflow"] is None
    assert [d["id"] for d in await queries.worklist(world.store, centre="city-imaging")] == [ninth["id"]]


async def test_coordinator_moves_a_queued_task(world):
    doc = await request(world, 1)
    with pytest.raises(NotFound):  # the city coordinator cannot see the county's queue
        await execute(world.rt, MoveToCentre(doc["id"], "city-imaging", "rebalance"), actor=world.who("coord-city"))
    with pytest.raises(Invalid, match="does not read imaging"):
        await execute(world.rt, MoveToCentre(doc["id"], "city-ecg", "x"), actor=world.who("coord-county"))
    with pytest.raises(Invalid, match="no reading centre"):
        await execute(world.rt, MoveToCentre(doc["id"], "nowhere", "x"), actor=world.who("coord-county"))
    moved = await execute(world.rt, MoveToCentre(doc["id"], "city-imaging", "县中心今日设备检修"),
                          actor=world.who("coord-county"))
    assert moved["centre"] == "city-imaging" and moved["moves"][-1]["manual"] is True
    assert moved["moves"][-1]["reason"] == "县中心今日设备检修" and moved["moves"][-1]["by"] == "coord-county"
    with pytest.raises(NotFound):
        await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang"))
    claimed = await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-chen"))
    assert claimed["state"] == "claimed"
    with pytest.raises(IllegalTransition, match="cannot move a reading request in state 'claimed'"):
        await execute(world.rt, MoveToCentre(doc["id"], "county-imaging", "back"), actor=world.who("admin"))
    moved_event = [e for e in await world.events(subject=doc["id"]) if e.type == "reading.moved"][0]
    assert moved_event.data["from_centre"] == "county-imaging" and moved_event.data["to_centre"] == "city-imaging"


async def test_sla_risk_is_flagged_once(world):
    doc = await request(world, 1, priority="stat")  # 30 min SLA, at risk after 80 %: 24 min
    world.clock.advance(23 * 60)
    assert await world.service.sweep() == (0, 0)
    world.clock.advance(2 * 60)
    assert await world.service.sweep() == (0, 1)
    assert await world.service.sweep() == (0, 0)  # once
    flagged = await queries.get_request(world.store, doc["id"])
    assert flagged["sla_at_risk"] is True and flagged["state"] == "queued"
    risk = [e for e in await world.events(subject=doc["id"]) if e.type == "reading.sla_at_risk"]
    assert len(risk) == 1 and risk[0].data["deadline"] == doc["deadline"]
