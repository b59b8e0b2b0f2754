"""Duty rosters (排班管理): the rules (services/core/roster.py), the coordinator's API, and what
reads who is on duty: routing and overflow, SLA risk, critical escalations, the on-duty view.
Real SQLite, the api service on loopback, the manual clock (docs/quality.md#duty-rosters)."""

from __future__ import annotations

import pytest

from services.core import duty, roster
from services.workflow.context import SETTINGS_KEY
from services.workflow.leases import WorkflowSettings, parse_iso
from services.workflow.service import flag_sla_risks

from ..support import ManualClock
from .conftest import api  # noqa: F401 - the fixture

CG_CT, CG_DX = "1.2.826.0.1.100.1", "1.2.826.0.1.100.2"
ROSTER = "/api/v1/centres/county-imaging/roster"
DAY = {"start": "2030-02-01T00:00:00+08:00", "end": "2030-02-02T00:00:00+08:00"}


def shift(reader: str, kind: str, start: str, end: str) -> dict:
    return {"reader": reader, "kind": kind, "start": f"2030-02-01T{start}:00+08:00",
            "end": f"2030-02-0{2 if end == '24:00' else 1}T{'00:00' if end == '24:00' else end}:00+08:00"}


# One day at county-imaging (min_on_duty day 2, night 1): two on the day shift, dr-zhou on call
# through the evening, nobody at night (the gap).
DAY_SHIFTS = [shift("dr-wang", "day", "08:00", "20:00"), shift("dr-li", "day", "08:00", "20:00"),
              shift("dr-zhou", "on_call", "18:00", "23:00")]


@pytest.fixture
async def world(api):  # noqa: F811
    api.clock = ManualClock(parse_iso("2030-01-31T20:00:00Z"))  # 04:00 on 1 February in Beijing
    api.rt.shared[SETTINGS_KEY] = WorkflowSettings(clock=api.clock)
    return api


def at_local(api, hhmm: str) -> None:
    h, m = map(int, hhmm.split(":"))
    api.clock.now = parse_iso("2030-02-01T00:00:00Z") + (h - 8) * 3600 + m * 60


# --- the rules ----------------------------------------------------------------------------------

def S(reader, kind, start, end, centre="c"):
    return {"centre": centre, "reader": reader, "kind": kind, "start": start, "end": end}


def test_on_duty_overlaps_and_minimum():
    shifts = [S("a", "day", "2030-01-01T00:00Z", "2030-01-01T12:00Z"), S("b", "night", "2030-01-01T12:00Z",
                                                                          "2030-01-01T23:00Z"),
              S("c", "on_call", "2030-01-01T06:00Z", "2030-01-01T18:00Z")]
    assert [s["reader"] for s in roster.on_duty(shifts, "2030-01-01T11:59Z")] == ["a", "c"]
    assert [s["reader"] for s in roster.on_duty(shifts, "2030-01-01T12:00Z")] == ["b", "c"]  # end excluded
    assert roster.readers_on_duty(shifts, "2030-01-01T07:00Z") == ["a"]  # on call is no capacity
    assert roster.on_duty(shifts, "2030-01-01T23:30Z") == []
    assert roster.overlaps(shifts) == []
    clash = S("a", "night", "2030-01-01T11:00Z", "2030-01-01T13:00Z")
    assert roster.overlaps([*shifts, clash]) == [(shifts[0], clash)]
    assert roster.understaffed(shifts, {"day": 1, "night": 1}) == []
    assert roster.understaffed(shifts, {"day": 2}) == [("day", "2030-01-01T00:00Z", 1, 2)]
    two = [S("a", "day", "2030-01-01T00:00Z", "2030-01-01T12:00Z"), S("d", "day", "2030-01-01T00:00Z",
                                                                      "2030-01-01T10:00Z")]
    assert roster.understaffed(two, {"day": 2}) == [("day", "2030-01-01T10:00Z", 1, 2)]  # short at the end
    assert roster.escalation_targets(["a"], ["lead"], 1) == ["a"]
    assert roster.escalation_targets(["a"], ["lead"], 2) == ["a", "lead"]
    assert roster.escalation_targets([], ["lead"], 1) == ["lead"]


# --- the coordinator's API ------------------------------------------------------------------------

async def test_a_coordinator_sets_his_centres_roster_checked_as_a_whole(world):
    status, problem, _ = await world.call("PUT", ROSTER, user="coord-county", json={
        **DAY, "shifts": [*DAY_SHIFTS, shift("dr-li", "on_call", "19:00", "21:00")]})
    assert status == 422 and "dr-li would be on two shifts at once" in problem["detail"]
    status, problem, _ = await world.call("PUT", ROSTER, user="coord-county", json={
        **DAY, "shifts": [shift("dr-wang", "day", "08:00", "20:00"), shift("dr-li", "day", "08:00", "18:00")]})
    assert status == 422 and "at least 2 reader(s) on day shifts" in problem["detail"]
    assert "2030-02-01T10:00:00.000Z" in problem["detail"]  # from 18:00 Beijing time
    status, problem, _ = await world.call("PUT", ROSTER, user="coord-county", json={
        **DAY, "shifts": [shift("dr-chen", "day", "08:00", "20:00")]})
    assert status == 422 and "not a reader of centre county-imaging" in problem["detail"]
    status, problem, _ = await world.call("PUT", ROSTER, user="coord-county", json={
        **DAY, "shifts": [{**shift("dr-wang", "day", "08:00", "20:00"), "start": "2030-02-01T08:00:00"}]})
    assert status == 422 and "offset" in problem["detail"]
    for user, code in (("coord-city", 404), ("dr-wang", 403), ("cg-clinic", 403)):
        assert (await world.call("PUT", ROSTER, user=user, json={**DAY, "shifts": DAY_SHIFTS}))[0] == code, user
    assert await world.rt.store.find("shifts") == []

    body = await world.ok("PUT", ROSTER, "coord-county", {**DAY, "shifts": DAY_SHIFTS})
    assert [(s["reader"], s["kind"], s["start"], s["start_local"]) for s in body["shifts"]] == [
        ("dr-li", "day", "2030-02-01T00:00:00.000Z", "2030-02-01T08:00:00.000+08:00"),
        ("dr-wang", "day", "2030-02-01T00:00:00.000Z", "2030-02-01T08:00:00.000+08:00"),
        ("dr-zhou", "on_call", "2030-02-01T10:00:00.000Z", "2030-02-01T18:00:00.000+08:00")]
    # setting the period again replaces it
    again = await world.ok("PUT", ROSTER, "admin", {**DAY, "shifts": DAY_SHIFTS[:2]})
    assert len(again["shifts"]) == 2 and len(await world.rt.store.find("shifts")) == 2
    listed = await world.ok("GET", ROSTER, "dr-li")
    assert listed["min_on_duty"] == {"day": 2, "night": 1} and len(listed["items"]) == 2
    assert (await world.call("GET", ROSTER, user="dr-chen"))[0] == 404
    changed = [e.event.data for e in await world.rt.store.read_log(0, limit=1000) if e.event.type == "roster.changed"]
    assert [(e["shifts"], e["replaced"], e["actor"]) for e in changed] == [(3, 0, "coord-county"), (2, 3, "admin")]
    audit = await world.rt.store.find("audit", {"action": "roster.set", "outcome": "success"})
    assert len(audit) == 2


# --- what reads it --------------------------------------------------------------------------------

async def test_routing_uses_on_duty_capacity_and_a_gap_overflows_at_once(world):
    await world.ok("PUT", ROSTER, "coord-county", {**DAY, "shifts": DAY_SHIFTS})
    at_local(world, "10:00")
    day = await world.create_request(CG_CT)
    assert day["centre"] == "county-imaging" and day["overflow"] is None
    at_local(world, "21:00")  # the night gap: only dr-zhou on call, nobody at the workstation
    night = await world.create_request(CG_DX)
    assert (night["centre"], night["routed_centre"]) == ("city-imaging", "county-imaging")
    assert night["overflow"]["reason"] == "county-imaging has no reader on duty"


async def test_a_task_nobody_on_duty_can_read_in_time_is_at_sla_risk_at_once(world):
    await world.ok("PUT", ROSTER, "coord-county", {**DAY, "shifts": DAY_SHIFTS})
    at_local(world, "19:30")
    urgent = await world.create_request(CG_CT, priority="urgent")  # 2 h: due 21:30, the gap starts at 20:00
    routine = await world.create_request(CG_DX)  # 24 h: the next day shift comes before it is due
    async with world.rt.store.transaction() as tx:  # tomorrow's day shift
        for reader in ("dr-wang", "dr-li"):
            await tx.insert("shifts", {"id": f"sh-{reader}", "centre": "county-imaging", "reader": reader,
                                       "kind": "day", "start": "2030-02-02T00:00:00.000Z",
                                       "end": "2030-02-02T12:00:00.000Z"})
    assert await flag_sla_risks(world.rt) == 0  # 19:30: both on duty
    at_local(world, "20:05")  # well before 80 % of the urgent SLA (21:06)
    assert await flag_sla_risks(world.rt) == 1
    assert (await world.rt.store.get("reading_requests", urgent["id"]))["sla_at_risk"] is True
    assert (await world.rt.store.get("reading_requests", routine["id"]))["sla_at_risk"] is False
    assert await flag_sla_risks(world.rt) == 0  # once


async def test_who_is_on_duty_now_and_who_critical_escalations_go_to(world):
    await world.ok("PUT", ROSTER, "coord-county", {**DAY, "shifts": DAY_SHIFTS})
    at_local(world, "18:30")
    now = await world.ok("GET", "/api/v1/on-duty", "coord-county")
    [centre] = now["centres"]
    assert (centre["centre"], centre["rostered"], centre["readers"], centre["on_call"], centre["leads"]) == \
        ("county-imaging", True, ["dr-li", "dr-wang"], ["dr-zhou"], ["dr-wang"])
    assert [s["end_local"] for s in centre["shifts"]][0] == "2030-02-01T20:00:00.000+08:00"
    everyone = await world.ok("GET", "/api/v1/on-duty", "admin")
    city = next(c for c in everyone["centres"] if c["centre"] == "city-imaging")
    assert city["rostered"] is False and city["readers"] == ["dr-chen"]  # the file's on_duty flags
    assert (await world.call("GET", "/api/v1/on-duty?centre=city-imaging", user="coord-county"))[0] == 404
    store, consortium = world.rt.store, world.rt.consortium
    assert await duty.escalation_targets(store, consortium, "county-imaging", "2030-02-01T10:30:00.000Z", 1) == \
        ["dr-li", "dr-wang", "dr-zhou"]
    assert await duty.escalation_targets(store, consortium, "county-imaging", "2030-02-01T13:00:00.000Z", 1) == \
        ["dr-zhou"]  # 21:00: on call only
    assert await duty.escalation_targets(store, consortium, "county-imaging", "2030-02-01T13:00:00.000Z", 2) == \
        ["dr-zhou", "dr-wang"]
    assert await duty.escalation_targets(store, consortium, "county-imaging", "2030-02-01T16:00:00.000Z", 1) == \
        ["dr-wang"]  # midnight: nobody on duty, the lead
