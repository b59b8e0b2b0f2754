"""Remote consultation through the real HTTP API: request, triage, schedule a panel from two
centres, double-booking refused (also under concurrency), reschedule, reminders, no-show,
notes, the signed opinion, scope, and illegal transitions that change nothing."""

from __future__ import annotations

import asyncio

from services.workflow.consultation import reminders
from services.workflow.leases import parse_iso

from .conftest import BASE, CG_CT, CG_DX, DB_CT, events, request_body, slot, triaged

UP_REFER = {"assessment": "不稳定型心绞痛可能，心电图 ST 段改变", "recommendations": {
    "disposition": "up_refer", "referral": {"hospital": "示范市第一人民医院", "department": "心内科"},
    "plan": "阿司匹林 100mg qd，尽快转诊行冠脉造影", "follow_up_date": "2030-01-20"}}


async def snapshot(api) -> dict:
    return {c: sorted(await api.rt.store.find(c), key=lambda d: d["id"])
            for c in ("consultations", "bookings", "consultation_notes", "consultation_invitations")}


async def test_request_schedule_reschedule_notes_opinion(api, clock):
    # The clinic asks, attaching two of its own studies; the patient comes from them.
    doc = await api.ok("POST", BASE, "cg-clinic", request_body(study_uids=[CG_CT, CG_DX], patient_id="CG001",
                                                               preferred_windows=[slot(2, 9)]), status=201)
    cid = doc["id"]
    assert doc["state"] == "requested" and doc["organization"] == "chengguan-thc"
    assert doc["patient_name"] == "Zhang^San" and doc["centre"] == "county-imaging"  # nearest upper centre
    assert (await api.call("POST", f"{BASE}/{cid}/schedule", user="coord-county",
                           json={**slot(2, 9), "specialists": ["dr-wang"]}))[0] == 409  # triage first
    await api.ok("POST", f"{BASE}/{cid}/triage", "coord-county", {"note": "转心内科会诊"})
    # A panel from two centres (county-imaging, city-ecg); the meeting link from the template.
    scheduled = await api.ok("POST", f"{BASE}/{cid}/schedule", "coord-county",
                             {**slot(2, 9), "specialists": ["dr-sun", "dr-wang"]})
    assert scheduled["state"] == "scheduled" and scheduled["lead"] == "dr-sun"
    assert scheduled["meeting_url"] == f"https://meet.example.org/yilian/{cid}"
    assert {(m["id"], m["centre"]) for m in scheduled["specialists"]} == {("dr-sun", "city-ecg"),
                                                                         ("dr-wang", "county-imaging")}
    (ev,) = await events(api, "consultation.scheduled", cid)
    assert ev["slot_start"] == "2030-01-02T09:00:00.000Z" and ev["meeting_url"] == scheduled["meeting_url"]

    # Another clinic's consultation cannot take dr-sun at an overlapping time: 409 naming the clash.
    other = await triaged(api, "db-clinic", study_uids=[DB_CT])
    before = await snapshot(api)
    status, problem, _ = await api.call("POST", f"{BASE}/{other['id']}/schedule", user="coord-county",
                                        json={"start": "2030-01-02T09:30:00Z", "end": "2030-01-02T10:30:00Z",
                                              "specialists": ["dr-zhao", "dr-sun"]})
    assert status == 409 and "dr-sun" in problem["detail"] and cid in problem["detail"], problem
    assert await snapshot(api) == before  # dr-zhao was not booked either

    # Reschedule with a reason: the old slot is free again, everyone is told.
    moved = await api.ok("POST", f"{BASE}/{cid}/reschedule", "coord-county", {**slot(3, 14), "reason": "专家门诊冲突"})
    assert moved["slot_start"] == "2030-01-03T14:00:00.000Z" and moved["reschedules"][0]["reason"] == "专家门诊冲突"
    (ev,) = await events(api, "consultation.rescheduled", cid)
    assert ev["previous_slot"]["start"] == "2030-01-02T09:00:00.000Z" and len(ev["specialists"]) == 2
    await api.ok("POST", f"{BASE}/{other['id']}/schedule", "coord-county",
                 {"start": "2030-01-02T09:30:00Z", "end": "2030-01-02T10:30:00Z", "specialists": ["dr-zhao", "dr-sun"]})

    # Specialists see their upcoming consultations and the case with priors from any site.
    mine = await api.ok("GET", BASE, "dr-wang")
    assert [d["id"] for d in mine["items"]] == [cid]
    assert [d["id"] for d in (await api.ok("GET", BASE, "dr-sun"))["items"]] == [other["id"], cid]  # by slot
    case = await api.ok("GET", f"{BASE}/{cid}/case", "dr-wang")
    assert [s["id"] for s in case["studies"]] == [CG_CT, CG_DX]
    assert [p["id"] for p in case["priors"]] == ["1.2.826.0.1.100.3"]  # hongmiao-thc: same name + birth date
    assert case["case_summary"]["question"].startswith("冠心病")
    clinic_case = await api.ok("GET", f"{BASE}/{cid}/case", "cg-clinic")
    assert clinic_case["priors"] == []  # a clinic sees only its own studies
    for user in ("dr-li", "dr-chen", "coord-city", "db-clinic"):  # not invited / not theirs
        assert (await api.call("GET", f"{BASE}/{cid}", user=user))[0] == 404, user

    # A day later: the other consultation never started (no-show, no late reminder); ours is reminded.
    clock.now = parse_iso("2030-01-03T13:50:00Z")
    assert await reminders.sweep(api.rt) == (1, 1)
    assert [e["consultation_id"] for e in await events(api, "consultation.reminder")] == [cid]
    assert [e["consultation_id"] for e in await events(api, "consultation.no_show")] == [other["id"]]

    await api.ok("POST", f"{BASE}/{cid}/start", "dr-wang")
    note = await api.ok("POST", f"{BASE}/{cid}/notes", "dr-wang", {"text": "胸片未见明显异常"}, status=201)
    await api.ok("POST", f"{BASE}/{cid}/notes", "dr-sun", {"text": "ST 段压低，建议冠脉造影"}, status=201)
    notes = await api.ok("GET", f"{BASE}/{cid}/notes", "cg-clinic")
    assert [n["author_id"] for n in notes["items"]] == ["dr-wang", "dr-sun"] and notes["items"][0]["id"] == note["id"]
    assert (await api.call("POST", f"{BASE}/{cid}/notes", user="dr-li", json={"text": "x"}))[0] == 404

    # Only the lead signs.
    status, problem, _ = await api.call("POST", f"{BASE}/{cid}/opinion", user="dr-wang", json=UP_REFER)
    assert status == 403 and "dr-sun" in problem["detail"]
    done = await api.ok("POST", f"{BASE}/{cid}/opinion", "dr-sun", {**UP_REFER, "signers": ["dr-wang"]})
    assert done["state"] == "concluded" and done["opinion"]["recommendations"]["disposition"] == "up_refer"
    (ev,) = await events(api, "consultation.concluded", cid)
    assert ev["organization"] == "chengguan-thc" and ev["study_uids"] == [CG_CT, CG_DX]
    assert ev["patient_id"] == "CG001" and ev["patient_name"] == "Zhang^San" and ev["critical"] is False
    assert [s["id"] for s in ev["signers"]] == ["dr-sun", "dr-wang"] and ev["signers"][0]["name"] == "孙立平"
    assert ev["recommendations"]["referral"]["department"] == "心内科" and "上转" in ev["recommendations"]["text"]
    assert await api.rt.store.count("bookings", {"consultation_id": cid}) == 0  # time released
    assert (await api.call("POST", f"{BASE}/{cid}/cancel", user="coord-county", json={"reason": "x"}))[0] == 409

    # Every transition is an audit record.
    actions = [r["action"] for r in sorted(await api.rt.store.find("audit", {"resource": f"consultation/{cid}"}),
                                           key=lambda r: r["time"]) if r["outcome"] == "success"]
    for action in ("consultation.request", "consultation.triage", "consultation.schedule",
                   "consultation.reschedule", "consultation.start", "consultation.note", "consultation.conclude"):
        assert action in actions, action


async def test_reminder_once_then_no_show_flagged_and_rescheduled(api, clock):
    cid = (await triaged(api, study_uids=[CG_CT]))["id"]
    await api.ok("POST", f"{BASE}/{cid}/schedule", "coord-county", {**slot(2, 9, 30), "specialists": ["dr-wang"]})
    clock.now = parse_iso("2030-01-02T08:44:00Z")  # 16 min before: not yet (lead 900 s)
    assert await reminders.sweep(api.rt) == (0, 0)
    clock.now = parse_iso("2030-01-02T08:46:00Z")
    assert await reminders.sweep(api.rt) == (1, 0)
    assert await reminders.sweep(api.rt) == (0, 0)  # once
    (ev,) = await events(api, "consultation.reminder", cid)
    assert ev["lead_seconds"] == 900 and ev["specialists"][0]["id"] == "dr-wang"
    clock.now = parse_iso("2030-01-02T09:31:00Z")  # the slot passed without a start
    assert await reminders.sweep(api.rt) == (0, 1)
    doc = await api.ok("GET", f"{BASE}/{cid}", "coord-county")
    assert doc["state"] == "no_show" and await api.rt.store.count("bookings", {"consultation_id": cid}) == 0
    (ev,) = await events(api, "consultation.no_show", cid)
    assert ev["centre"] == "county-imaging" and ev["slot_end"] == "2030-01-02T09:30:00.000Z"
    status, problem, _ = await api.call("POST", f"{BASE}/{cid}/start", user="dr-wang")
    assert status == 409 and "no_show" in problem["detail"]
    again = await api.ok("POST", f"{BASE}/{cid}/reschedule", "coord-county", {**slot(4, 9), "reason": "患者未到"})
    assert again["state"] == "scheduled" and again["reminder_sent"] is False


async def test_two_coordinators_booking_one_specialist_at_once_exactly_one_wins(api, clock):
    a = await triaged(api, study_uids=[CG_CT])
    b = await triaged(api, "db-clinic", study_uids=[DB_CT])
    body = {**slot(5, 10), "specialists": ["dr-chen"]}
    results = await asyncio.gather(*(api.call("POST", f"{BASE}/{x['id']}/schedule", user="coord-county", json=body)
                                     for x in (a, b) for _ in range(3)))
    statuses = sorted(r[0] for r in results)
    assert statuses.count(200) == 1 and all(s == 409 for s in statuses if s != 200), statuses
    assert await api.rt.store.count("bookings", {"specialist": "dr-chen"}) == 12  # one hour, one owner
    assert len(await events(api, "consultation.scheduled")) == 1


async def test_illegal_or_invalid_commands_change_nothing(api, clock):
    cid = (await triaged(api, study_uids=[CG_CT]))["id"]
    await api.ok("POST", f"{BASE}/{cid}/schedule", "coord-county", {**slot(2, 9), "specialists": ["dr-wang"]})
    before = await snapshot(api)
    refused = [
        ("cg-clinic", "withdraw", {"reason": "不需要了"}, 409, "ask the coordinator"),
        ("dr-wang", "opinion", UP_REFER, 409, "not started"),
        ("coord-county", "triage", {}, 409, "state 'scheduled'"),
        ("coord-county", "reschedule", {**slot(2, 9)}, 422, "reason"),
        ("coord-county", "reschedule", {"start": "2030-01-02T09:03:00Z", "end": "2030-01-02T10:00:00Z",
                                        "reason": "r"}, 422, "5-minute"),
        ("coord-county", "reschedule", {**slot(2, 9), "reason": "r", "specialists": ["coord-city"]}, 422,
         "not a reader"),
        ("coord-county", "reschedule", {"start": "2029-12-31T09:00:00Z", "end": "2029-12-31T10:00:00Z",
                                        "reason": "r"}, 422, "future"),
        ("cg-clinic", "cancel", {"reason": "r"}, 403, "clinic"),
        ("dr-wang", "schedule", {**slot(2, 9), "specialists": ["dr-wang"]}, 403, "reader"),
    ]
    for user, action, body, status, words in refused:
        got, problem, _ = await api.call("POST", f"{BASE}/{cid}/{action}", user=user, json=body)
        assert got == status and words in problem["detail"], (action, got, problem)
    assert await snapshot(api) == before
    # the clinic may attach only its own studies, and name a patient it knows
    for body in (request_body(study_uids=[DB_CT]), request_body(patient_id="DB001")):
        assert (await api.call("POST", BASE, user="cg-clinic", json=body))[0] == 404
    assert (await api.call("POST", BASE, user="cg-clinic", json=request_body()))[0] == 422  # no patient at all
    assert await snapshot(api) == before
    # a free-text patient without studies is fine, and may be withdrawn before scheduling
    free = await api.ok("POST", BASE, "zz-clinic", request_body(patient_name="赵六", specialty="心内科"), status=201)
    assert free["patient_source"] == "free_text" and free["centre"] == "county-ecg"  # 心内科 reader dr-zhao
    gone = await api.ok("POST", f"{BASE}/{free['id']}/withdraw", "zz-clinic", {"reason": "已自行就医"})
    assert gone["state"] == "withdrawn" and (await events(api, "consultation.withdrawn", free["id"]))


async def test_lists_are_scoped(api, clock):
    cg = await triaged(api, study_uids=[CG_CT])
    db = await triaged(api, "db-clinic", study_uids=[DB_CT])
    assert [d["id"] for d in (await api.ok("GET", BASE, "cg-clinic"))["items"]] == [cg["id"]]
    assert [d["id"] for d in (await api.ok("GET", BASE, "db-clinic"))["items"]] == [db["id"]]
    assert {d["id"] for d in (await api.ok("GET", BASE, "coord-county"))["items"]} == {cg["id"], db["id"]}
    assert (await api.ok("GET", BASE, "coord-city"))["items"] == []
    assert (await api.ok("GET", BASE, "dr-wang"))["items"] == []  # not invited yet
    assert len((await api.ok("GET", BASE + "?state=triaged", "admin"))["items"]) == 2
    assert (await api.call("GET", BASE, user="auditor"))[0] == 403


async def test_invited_specialists_see_the_attached_studies_and_priors(api, clock):
    cid = (await triaged(api, study_uids=[CG_CT]))["id"]
    for uid in (CG_CT, "1.2.826.0.1.100.3"):  # attached, and the patient's prior at hongmiao-thc
        assert (await api.call("GET", f"/api/v1/studies/{uid}", user="dr-chen"))[0] == 404  # not invited yet
    await api.ok("POST", f"{BASE}/{cid}/schedule", "coord-county", {**slot(2, 9), "specialists": ["dr-chen"]})
    for uid in (CG_CT, "1.2.826.0.1.100.3"):
        assert (await api.call("GET", f"/api/v1/studies/{uid}", user="dr-chen"))[0] == 200
    for user, uid in (("dr-sun", CG_CT), ("dr-chen", DB_CT)):  # not invited / another patient
        assert (await api.call("GET", f"/api/v1/studies/{uid}", user=user))[0] == 404
