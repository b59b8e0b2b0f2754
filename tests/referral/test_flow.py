"""Two-way referral (双向转诊) through the real HTTP API, and the issue's Proof: an urgent
up-referral from a signed report, the receiving department sees the study and report, six
concurrent bookings of one reserved slot (one winner), accept, arrival, a down-referral with a
plan back to the township and its family doctor; release to the general pool, the green channel
preempting, refusal needing a reason, escalation to the coordinator."""

from __future__ import annotations

import asyncio

from services.workflow.leases import parse_iso
from services.workflow.referral import sweeps

from .conftest import BASE, CG_CT, CG_DX, DB_CT, SLOTS, events, local_slots, signed_report, up_body

PLAN = {"medicines": [{"name": "阿司匹林肠溶片", "dose": "100mg", "frequency": "qd", "duration": "长期"},
                      {"name": "阿托伐他汀钙片", "dose": "20mg", "frequency": "qn"}],
        "follow_ups": [{"date": "2030-01-20", "what": "复查血脂、肝功能"}, {"date": "2030-01-10", "what": "血压心率随访"}],
        "rehabilitation": "心脏康复 II 期：每周 3 次有氧训练"}


async def test_proof_up_referral_from_a_signed_report_to_down_referral(api, clock):
    report = await signed_report(api)
    published = await api.ok("POST", SLOTS, "county-cardio",
                             {"department": "心内科", "slots": local_slots(3, "09:00", "09:30", "10:00")}, status=201)
    slot_ids = [s["id"] for s in published["items"]]
    assert published["items"][0]["start"] == "2030-01-03T01:00:00.000Z"
    assert published["items"][0]["release_at"] == "2030-01-02T01:00:00.000Z"  # 24 h before (consortium file)

    # The township doctor raises an urgent up-referral from the signed report: pre-filled from it.
    up = await api.ok("POST", BASE, "cg-clinic", {"from_report": report["report_id"], "target_organization": "示范县人民医院",
                                                 "department": "心内科", "urgency": "urgent",
                                                 "family_doctor": "刘医生（城关镇家庭医生团队）"}, status=201)
    rid = up["id"]
    assert up["state"] == "requested" and up["study_uids"] == [CG_CT] and up["patient_id"] == "CG001"
    assert up["reason"].startswith("左心室增大") and up["source"] == {"kind": "report", "id": report["report_id"]}
    assert up["report_ids"] == [report["report_id"]] and up["target_organization"] == "county-hospital"

    # The county department sees it, the attached study and its report; another department and clinic do not.
    assert [d["id"] for d in (await api.ok("GET", BASE, "county-cardio"))["items"]] == [rid]
    case = await api.ok("GET", f"{BASE}/{rid}/case", "county-cardio")
    assert [s["id"] for s in case["studies"]] == [CG_CT]
    assert [r["id"] for r in case["reports"]] == [report["report_id"]] and case["reports"][0]["impression"]
    assert (await api.call("GET", f"/api/v1/studies/{CG_CT}", user="county-cardio"))[0] == 200  # scope, via the referral
    assert (await api.call("GET", f"/api/v1/studies/{CG_DX}", user="county-cardio"))[0] == 404  # not attached
    for user in ("county-neuro", "db-clinic", "city-cardio", "coord-city"):
        assert (await api.call("GET", f"{BASE}/{rid}", user=user))[0] == 404, user
    audit = await api.rt.store.find("audit", {"resource": f"referral/{rid}", "action": "referral.case"})
    assert audit and audit[0]["actor"] == "county-cardio" and audit[0]["detail"]["study_uids"] == [CG_CT]

    # Six concurrent bookings of one reserved slot (six referrals of two clinics): exactly one wins.
    others = [await api.ok("POST", BASE, user, up_body(study_uids=[uid], urgency="routine"), status=201)
              for user, uid in (("cg-clinic", CG_DX), ("db-clinic", DB_CT), ("cg-clinic", CG_CT),
                                ("db-clinic", DB_CT), ("cg-clinic", CG_DX))]
    contenders = [rid] + [o["id"] for o in others]
    results = await asyncio.gather(*(api.call("POST", f"{BASE}/{x}/book", user="county-cardio",
                                              json={"slot_id": slot_ids[0]}) for x in contenders))
    statuses = [r[0] for r in results]
    assert sorted(statuses) == [200, 409, 409, 409, 409, 409], statuses
    winner = contenders[statuses.index(200)]
    assert all("already booked" in r[1]["detail"] for r in results if r[0] == 409)
    slot = (await api.ok("GET", SLOTS + "?organization=county-hospital&date=2030-01-03", "cg-clinic"))["items"][0]
    assert slot["referral_id"] == winner and slot["state"] == "booked" and slot["available"] is False
    assert len(await events(api, "referral.booked")) == 1

    # The department accepts ours with a slot (the won one, or the next if another referral won).
    mine = slot_ids[0] if winner == rid else slot_ids[1]
    accepted = await api.ok("POST", f"{BASE}/{rid}/accept", "county-cardio", {"slot_id": mine, "note": "请携带既往资料"})
    assert accepted["state"] == "accepted" and accepted["slot"]["id"] == mine
    clock.now = parse_iso("2030-01-03T01:05:00Z")
    assert (await api.ok("POST", f"{BASE}/{rid}/arrive", "county-cardio"))["state"] == "arrived"
    assert (await api.ok("POST", f"{BASE}/{rid}/complete", "county-cardio", {"summary": "冠脉造影：前降支狭窄 70%，植入支架 1 枚"})
            )["state"] == "completed"

    # Down-referral with a plan back to the township and its family doctor.
    clock.now = parse_iso("2030-01-08T02:00:00Z")
    down = await api.ok("POST", f"{BASE}/{rid}/refer-down", "county-cardio", {
        "diagnosis": "冠状动脉粥样硬化性心脏病，PCI 术后", "treatment_summary": "经桡动脉行 PCI，前降支植入支架 1 枚，术后恢复良好",
        "plan": PLAN}, status=201)
    assert down["direction"] == "down" and down["target_organization"] == "chengguan-thc"
    assert down["family_doctor"] == "刘医生（城关镇家庭医生团队）" and down["parent_id"] == rid
    assert [f["date"] for f in down["plan"]["follow_ups"]] == ["2030-01-10", "2030-01-20"]
    assert (await api.call("POST", f"{BASE}/{down['id']}/accept", user="county-cardio"))[0] == 403  # not the township's
    await api.ok("POST", f"{BASE}/{down['id']}/accept", "cg-clinic")
    done = await api.ok("POST", f"{BASE}/{down['id']}/follow-up", "cg-clinic", {"date": "2030-01-10", "note": "血压 128/78"})
    assert done["state"] == "completed" and done["first_follow_up"]["date"] == "2030-01-10"

    # The whole trace, for the clinic, the department and the coordinator alike.
    for user in ("cg-clinic", "county-cardio", "coord-county"):
        steps = (await api.ok("GET", f"{BASE}/{rid}/trace", user))["steps"]
        assert [(s["direction"], s["action"]) for s in steps] == [
            ("up", "request"), ("up", "book"), ("up", "accept"),
            ("up", "arrive"), ("up", "complete"), ("up", "refer_down"), ("down", "request"), ("down", "accept"),
            ("down", "confirm_follow_up")], steps
    types = [e.event.type for e in await api.rt.store.read_log(0, limit=100000)
             if e.event.type.startswith("referral.") and e.event.subject in (rid, down["id"])]
    for t in ("referral.requested", "referral.accepted", "referral.arrived", "referral.completed"):
        assert t in types, t

    # The figures, recomputed from the event log (the monitor's API; a coordinator sees his hospital's rows).
    figures = await api.ok("GET", "/api/v1/monitor/referrals?month=2030-01", "admin")
    sites = {r["organization"]: r for r in figures["sites"]}
    assert sites["chengguan-thc"]["up_raised"] == 4 and sites["chengguan-thc"]["down_received"] == 1
    assert sites["dongba-thc"]["up_raised"] == 2
    county = sites["county-hospital"]
    assert county["up_received"] == 6 and county["down_sent"] == 1 and county["down_referral_rate"] == round(1 / 6, 4)
    (times,) = figures["times"]
    assert times["to_acceptance"] == {"count": 1, "median_seconds": 0, "p90_seconds": 0}  # the clock stood still
    assert times["to_arrival"]["median_seconds"] == 2 * 86400 + 3900  # 2030-01-01T00:00Z -> 01-03T01:05Z
    (slots,) = figures["slots"]
    assert (slots["published"], slots["booked"], slots["used"], slots["use_rate"]) == (3, 2 if winner != rid else 1, 1,
                                                                                          round(1 / 3, 4))
    mine = await api.ok("GET", "/api/v1/monitor/referrals", "coord-county")
    assert {r["organization"] for r in mine["sites"]} == {"county-hospital"}
    assert (await api.call("GET", "/api/v1/monitor/referrals", user="county-cardio"))[0] == 403


async def test_release_to_the_general_pool_green_channel_and_refusal(api, clock):
    await api.ok("POST", SLOTS, "county-cardio", {"department": "心内科", "slots": local_slots(3, "09:00", "14:00")},
                 status=201)
    bed = await api.ok("POST", SLOTS, "coord-county", {"department": "心内科", "kind": "bed", "date": "2030-01-04",
                                                       "quota": 2, "start": "00:00", "end": "23:59"}, status=201)
    assert [s["kind"] for s in bed["items"]] == ["bed", "bed"]
    rf = await api.ok("POST", BASE, "cg-clinic", up_body(), status=201)

    # The 09:00 slot is still free at its release time (24 h before): it returns to the general pool.
    clock.now = parse_iso("2030-01-02T01:00:00Z")
    assert await sweeps.release_slots(api.rt) == 1
    (ev,) = await events(api, "referral.slot_released")
    assert ev["start"] == "2030-01-03T01:00:00.000Z"
    slots = (await api.ok("GET", SLOTS + "?department=心内科", "cg-clinic"))["items"]
    assert [(s["state"], s["available"]) for s in slots][:2] == [("released", False), ("reserved", True)]
    status, problem, _ = await api.call("POST", f"{BASE}/{rf['id']}/book", user="county-cardio",
                                        json={"slot_id": slots[0]["id"]})
    assert status == 409 and "general pool" in problem["detail"], problem

    # A green-channel referral (胸痛) preempts: the earliest slot at once, even one released, and an alert.
    green = await api.ok("POST", BASE, "db-clinic", up_body(study_uids=[DB_CT], green_channel="胸痛"), status=201)
    assert green["urgency"] == "emergency" and green["slot"]["id"] == slots[0]["id"]
    (alert,) = await events(api, "referral.green_channel", green["id"])
    assert alert["target_department"] == "心内科" and alert["slot"]["id"] == slots[0]["id"]
    needs_bed = await api.ok("POST", BASE, "db-clinic", up_body(study_uids=[DB_CT], green_channel="卒中",
                                                                 needs_bed=True), status=201)
    assert needs_bed["slot"]["kind"] == "bed"

    # Refusal needs a reason (and nothing changes without one); with one, the slot is free again.
    await api.ok("POST", f"{BASE}/{rf['id']}/book", "county-cardio", {"slot_id": slots[1]["id"]})
    before = await api.ok("GET", f"{BASE}/{rf['id']}", "county-cardio")
    for body in ({}, {"reason": ""}):
        status, problem, _ = await api.call("POST", f"{BASE}/{rf['id']}/refuse", user="county-cardio", json=body)
        assert status == 422, (body, status, problem)
    assert await api.ok("GET", f"{BASE}/{rf['id']}", "county-cardio") == before
    refused = await api.ok("POST", f"{BASE}/{rf['id']}/refuse", "county-cardio", {"reason": "本科室床位已满，建议转市一院"})
    assert refused["state"] == "refused" and refused["refusal"]["reason"].startswith("本科室")
    slot = (await api.ok("GET", SLOTS + "?department=心内科&state=reserved", "cg-clinic"))["items"][0]
    assert slot["id"] == slots[1]["id"] and slot["referral_id"] is None
    # A refused referral's study is no longer the department's to see.
    assert (await api.call("GET", f"/api/v1/studies/{CG_CT}", user="county-cardio"))[0] == 404
    status, problem, _ = await api.call("POST", f"{BASE}/{rf['id']}/accept", user="county-cardio", json={})
    assert status == 409 and "refused" in problem["detail"]


async def test_unanswered_up_referral_escalates_to_the_coordinator_once(api, clock):
    rf = await api.ok("POST", BASE, "cg-clinic", up_body(), status=201)
    clock.now += 7199
    assert await sweeps.escalate(api.rt) == 0
    clock.now += 2
    assert await sweeps.escalate(api.rt) == 1
    assert await sweeps.escalate(api.rt) == 0  # once
    (ev,) = await events(api, "referral.escalated", rf["id"])
    assert ev["waited_seconds"] == 7201 and ev["target_organization"] == "county-hospital"
    doc = await api.ok("GET", f"{BASE}/{rf['id']}", "coord-county")
    assert doc["escalated_at"] and doc["state"] == "requested"


async def test_accepting_an_up_referral_needs_a_slot_and_sides_are_enforced(api, clock):
    rf = await api.ok("POST", BASE, "cg-clinic", up_body(), status=201)
    status, problem, _ = await api.call("POST", f"{BASE}/{rf['id']}/accept", user="county-cardio", json={})
    assert status == 422 and "slot" in problem["detail"]
    assert (await api.call("POST", f"{BASE}/{rf['id']}/accept", user="cg-clinic", json={}))[0] == 403
    assert (await api.call("POST", BASE, user="coord-county", json=up_body()))[0] == 403
    assert (await api.call("POST", BASE, user="county-cardio", json=up_body()))[0] == 422  # not above itself
    status, problem, _ = await api.call("POST", BASE, user="cg-clinic", json=up_body(target_organization="dongba-thc"))
    assert status == 422 and "upper hospital" in problem["detail"]
    assert (await api.call("POST", SLOTS, user="cg-clinic", json={"department": "心内科",
                                                                  "slots": local_slots(3, "09:00")}))[0] == 403
    assert (await api.call("POST", SLOTS, user="county-neuro", json={"department": "心内科",
                                                                     "slots": local_slots(3, "09:00")}))[0] == 403


async def test_up_referral_pre_filled_from_an_up_refer_consultation_opinion(api, clock):
    cons = await api.ok("POST", "/api/v1/consultations", "cg-clinic", {
        "chief_complaint": "反复胸闷", "question": "是否需要上转?", "urgency": "urgent", "study_uids": [CG_CT]}, status=201)
    cid = cons["id"]
    await api.ok("POST", f"/api/v1/consultations/{cid}/triage", "coord-county", {"note": "接收"})
    await api.ok("POST", f"/api/v1/consultations/{cid}/schedule", "coord-county",
                 {"start": "2030-01-02T09:00:00Z", "end": "2030-01-02T10:00:00Z", "specialists": ["dr-wang"]})
    clock.now = parse_iso("2030-01-02T09:01:00Z")
    await api.ok("POST", f"/api/v1/consultations/{cid}/start", "dr-wang")
    await api.ok("POST", f"/api/v1/consultations/{cid}/opinion", "dr-wang", {
        "assessment": "不稳定型心绞痛可能", "recommendations": {
            "disposition": "up_refer", "referral": {"hospital": "示范县人民医院", "department": "心内科"}}})
    up = await api.ok("POST", BASE, "cg-clinic", {"from_consultation": cid, "urgency": "urgent"}, status=201)
    assert (up["target_organization"], up["target_department"], up["reason"]) == ("county-hospital", "心内科",
                                                                                  "不稳定型心绞痛可能")
    assert up["study_uids"] == [CG_CT] and up["source"] == {"kind": "consultation", "id": cid}
    # Another clinic cannot use it; a consultation that does not recommend up-referral cannot pre-fill.
    assert (await api.call("POST", BASE, user="db-clinic", json={"from_consultation": cid}))[0] == 404
    other = await api.ok("POST", "/api/v1/consultations", "cg-clinic", {
        "chief_complaint": "咳嗽", "question": "?", "urgency": "routine", "study_uids": [CG_CT]}, status=201)
    status, problem, _ = await api.call("POST", BASE, user="cg-clinic", json={"from_consultation": other["id"]})
    assert status == 422 and "up-referral" in problem["detail"]


async def test_accepted_referral_whose_slot_ends_without_arrival_is_a_no_show(api, clock):
    slots = await api.ok("POST", SLOTS, "county-cardio", {"department": "心内科", "slots": local_slots(3, "09:00")},
                         status=201)
    rf = await api.ok("POST", BASE, "cg-clinic", up_body(), status=201)
    await api.ok("POST", f"{BASE}/{rf['id']}/accept", "county-cardio", {"slot_id": slots["items"][0]["id"]})
    clock.now = parse_iso("2030-01-03T01:29:00Z")  # 09:29 local: the slot has not ended
    assert await sweeps.flag_no_shows(api.rt) == 0
    clock.now = parse_iso("2030-01-03T01:31:00Z")
    assert await sweeps.flag_no_shows(api.rt) == 1
    assert await sweeps.flag_no_shows(api.rt) == 0
    doc = await api.ok("GET", f"{BASE}/{rf['id']}", "coord-county")
    assert doc["state"] == "no_show" and (await events(api, "referral.no_show", rf["id"]))[0]["slot"]["id"] == doc["slot_id"]
    slot = (await api.ok("GET", SLOTS + "?state=no_show", "cg-clinic"))["items"][0]
    assert slot["id"] == doc["slot_id"]
    late = await api.ok("POST", f"{BASE}/{rf['id']}/arrive", "county-cardio")  # a late arrival is still recorded
    assert late["state"] == "arrived"
    figures = await api.ok("GET", "/api/v1/monitor/referrals", "admin")
    county = next(r for r in figures["sites"] if r["organization"] == "county-hospital")
    assert county["no_shows"] == 1 and figures["slots"][0]["no_shows"] == 1 and figures["slots"][0]["used"] == 1
