"""Happy paths through the workflow commands over real HTTP: clinic asks, reader reads, result returns."""

from __future__ import annotations

import asyncio

CG_CT = "1.2.826.0.1.100.1"


async def test_request_claim_draft_sign_result(api):
    created = await api.create_request(CG_CT, priority="urgent", green_channel="胸痛")
    rid = created["id"]
    assert created["state"] == "queued" and created["centre"] == "county-imaging"

    work = await api.ok("GET", "/api/v1/worklist", "dr-wang")
    assert [t["id"] for t in work["items"]] == [rid]
    assert (await api.ok("GET", "/api/v1/worklist", "dr-chen"))["items"] == []  # another centre

    claimed = await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-wang")
    assert claimed["state"] == "claimed" and claimed["claimed_by"] == "dr-wang"
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/renew", "dr-wang")
    draft = {"findings": "右下肺斑片影", "impression": "右下肺炎", "critical": True, "critical_category": "大面积肺炎"}
    assert (await api.ok("PUT", f"/api/v1/reading-requests/{rid}/draft", "dr-wang", draft))["state"] == "draft"
    signed = await api.ok("POST", f"/api/v1/reading-requests/{rid}/sign", "dr-wang", {})
    assert signed["state"] == "signed" and signed["report_id"]

    results = await api.ok("GET", "/api/v1/reports", "cg-clinic")
    assert [r["id"] for r in results["items"]] == [signed["report_id"]]
    report = await api.ok("GET", f"/api/v1/reports/{signed['report_id']}", "cg-clinic")
    assert report["critical"] is True and report["impression"] == "右下肺炎" and report["reader_id"] == "dr-wang"
    assert (await api.ok("GET", "/api/v1/reports", "db-clinic"))["items"] == []

    addendum = await api.ok("POST", f"/api/v1/reports/{signed['report_id']}/addenda", "dr-wang",
                            {"text": "补充：建议两周后复查"}, status=201)
    assert addendum["addendum_of"] == signed["report_id"]

    studies = await api.ok("GET", "/api/v1/studies", "cg-clinic")
    by_uid = {s["id"]: s for s in studies["items"]}
    assert set(by_uid) == {CG_CT, "1.2.826.0.1.100.2"}
    assert by_uid[CG_CT]["reading_requests"][0]["state"] == "signed"


CG_DX, HM_PRIOR, HM_OTHER = "1.2.826.0.1.100.2", "1.2.826.0.1.100.3", "1.2.826.0.1.100.4"
DB_CT, DB_ECG = "1.2.826.0.1.200.1", "1.2.826.0.1.200.2"


async def test_worklist_order_filters_and_pagination(api):
    routine = await api.create_request(CG_CT, priority="routine")
    stat = await api.create_request(DB_CT, user="db-clinic", priority="stat")
    urgent_green = await api.create_request(CG_DX, priority="urgent", green_channel="卒中")
    ecg = await api.create_request(DB_ECG, user="db-clinic", kind="ecg", priority="stat")
    ids = [t["id"] for t in (await api.ok("GET", "/api/v1/worklist", "dr-wang"))["items"]]
    assert ids == [stat["id"], urgent_green["id"], routine["id"]]
    assert [t["id"] for t in (await api.ok("GET", "/api/v1/worklist", "dr-zhao"))["items"]] == [ecg["id"]]
    only = await api.ok("GET", "/api/v1/worklist?origin=chengguan-thc&modality=CT", "dr-wang")
    assert [t["id"] for t in only["items"]] == [routine["id"]]
    assert (await api.ok("GET", "/api/v1/worklist?priority=urgent", "dr-wang"))["items"][0]["id"] == urgent_green["id"]
    assert (await api.ok("GET", "/api/v1/worklist?kind=ecg", "dr-wang"))["items"] == []
    first = await api.ok("GET", "/api/v1/worklist?limit=2", "dr-wang")
    assert len(first["items"]) == 2 and first["next_offset"] == 2
    rest = await api.ok("GET", "/api/v1/worklist?limit=2&offset=2", "dr-wang")
    assert [t["id"] for t in rest["items"]] == [routine["id"]] and rest["next_offset"] is None


async def test_two_readers_race_to_claim_one_wins(api):
    rid = (await api.create_request(CG_CT))["id"]
    results = await asyncio.gather(*(api.call("POST", f"/api/v1/reading-requests/{rid}/claim", user=u)
                                     for u in ("dr-wang", "dr-li")))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 409], results
    winner = next(u for u, r in zip(("dr-wang", "dr-li"), results) if r[0] == 200)
    assert (await api.ok("GET", f"/api/v1/reading-requests/{rid}", winner))["claimed_by"] == winner
    assert len(await api.rt.store.find("audit", {"action": "reading.claim", "outcome": "success"})) == 1


async def test_release_cancel_return_escalate(api):
    rid = (await api.create_request(CG_CT))["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-wang")
    assert (await api.ok("POST", f"/api/v1/reading-requests/{rid}/release", "dr-wang"))["state"] == "queued"
    assert (await api.ok("POST", f"/api/v1/reading-requests/{rid}/cancel", "cg-clinic",
                         {"reason": "患者已转院"}))["state"] == "cancelled"

    rid = (await api.create_request(CG_CT))["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-li")
    status, problem, _ = await api.call("POST", f"/api/v1/reading-requests/{rid}/cancel", user="cg-clinic",
                                        json={"reason": "too late"})
    assert status == 409 and problem["type"].endswith("illegal-transition")
    returned = await api.ok("POST", f"/api/v1/reading-requests/{rid}/return", "dr-li",
                            {"reason_code": "image_quality", "comment": "运动伪影，请重扫"})
    assert returned["state"] == "returned" and returned["return"]["reason_code"] == "image_quality"

    rid = (await api.create_request(CG_CT))["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-wang")
    escalated = await api.ok("POST", f"/api/v1/reading-requests/{rid}/escalate", "dr-wang",
                             {"reason": "疑难病例，请上级会诊"})
    assert escalated["state"] == "escalated"
    upper = (await api.ok("GET", "/api/v1/worklist", "dr-chen"))["items"]
    assert [t["id"] for t in upper] == [escalated["escalated_to"]] and upper[0]["escalated_from"] == rid
    # the city reader now sees the study behind his task, and its patient's priors
    await api.ok("GET", f"/api/v1/studies/{CG_CT}", "dr-chen")
    # the clinic follows both requests
    mine = {r["id"]: r["state"] for r in (await api.ok("GET", "/api/v1/reading-requests", "cg-clinic"))["items"]}
    assert mine[rid] == "escalated" and mine[escalated["escalated_to"]] == "queued"


async def test_coordinator_sees_queues_and_moves_a_task(api):
    a = await api.create_request(CG_CT, priority="stat")
    b = await api.create_request(DB_CT, user="db-clinic")
    await api.ok("POST", f"/api/v1/reading-requests/{b['id']}/claim", "dr-li")
    queues = (await api.ok("GET", "/api/v1/queues", "coord-county"))["centres"]
    assert list(queues) == ["county-imaging"]
    assert queues["county-imaging"]["queued"]["depth"] == 1 and queues["county-imaging"]["claimed"]["depth"] == 1
    assert queues["county-imaging"]["queued"]["oldest_requested_at"] == a["requested_at"]
    status, _, _ = await api.call("GET", "/api/v1/queues?centre=city-imaging", user="coord-county")
    assert status == 403
    assert set((await api.ok("GET", "/api/v1/queues", "admin"))["centres"]) == set(api.rt.consortium.centres)

    moved = await api.ok("POST", f"/api/v1/reading-requests/{a['id']}/move", "coord-county",
                         {"centre": "city-imaging", "reason": "县中心积压"})
    assert moved["centre"] == "city-imaging"
    assert [t["id"] for t in (await api.ok("GET", "/api/v1/worklist", "dr-chen"))["items"]] == [a["id"]]
    # now it is another centre's task for the county coordinator
    status, _, _ = await api.call("GET", f"/api/v1/reading-requests/{a['id']}", user="coord-county")
    assert status == 404
    status, problem, _ = await api.call("POST", f"/api/v1/reading-requests/{b['id']}/move", user="dr-wang",
                                        json={"centre": "city-imaging", "reason": "x"})
    assert status == 403
    status, problem, _ = await api.call("POST", f"/api/v1/reading-requests/{b['id']}/move", user="coord-county",
                                        json={"centre": "county-ecg", "reason": "x"})
    assert status == 422 and "does not read imaging" in problem["detail"]


async def test_coordinator_assigns_a_task_to_a_named_reader(api):
    task = await api.create_request(CG_CT, priority="urgent")
    rid = task["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-wang")
    assigned = await api.ok("POST", f"/api/v1/reading-requests/{rid}/assign", "coord-county",
                            {"reader_id": "dr-li", "reason": "王医生下班"})
    assert (assigned["state"], assigned["claimed_by"]) == ("claimed", "dr-li")
    status, problem, _ = await api.call("POST", f"/api/v1/reading-requests/{rid}/sign", user="dr-wang",
                                        json={"findings": "f", "impression": "i"})
    assert status == 409 and "held by another reader" in problem["detail"]
    status, problem, _ = await api.call("POST", f"/api/v1/reading-requests/{rid}/assign", user="coord-county",
                                        json={"reader_id": "dr-chen", "reason": "x"})
    assert status == 422 and "reads for centre city-imaging" in problem["detail"]
    status, problem, _ = await api.call("POST", f"/api/v1/reading-requests/{rid}/assign", user="coord-county",
                                        json={"reader_id": "dr-wang"})
    assert status == 422  # the body schema: reason is required
    status, _, _ = await api.call("POST", f"/api/v1/reading-requests/{rid}/assign", user="dr-wang",
                                  json={"reader_id": "dr-wang", "reason": "x"})
    assert status == 403
    signed = await api.ok("POST", f"/api/v1/reading-requests/{rid}/sign", "dr-li",
                          {"findings": "未见异常", "impression": "正常"})
    assert signed["signed_by"] == "dr-li"
    status, problem, _ = await api.call("POST", f"/api/v1/reading-requests/{rid}/assign", user="coord-county",
                                        json={"reader_id": "dr-wang", "reason": "x"})
    assert status == 409 and "state 'signed'" in problem["detail"]


async def test_priors_follow_the_matching_rule(api):
    await api.create_request(CG_CT)
    priors = await api.ok("GET", f"/api/v1/studies/{CG_CT}/priors", "dr-wang")
    # same organisation + Patient ID, or the same resident ID at another site; never name (+ birth date) alone
    assert {p["id"] for p in priors["items"]} == {CG_DX, HM_PRIOR}
    # a prior from another site is open to the reader through his task's patient, nothing else is
    detail = await api.ok("GET", f"/api/v1/studies/{HM_PRIOR}", "dr-wang")
    assert detail["organization"] == "hongmiao-thc" and detail["series"] and detail["instances"]
    for uid in (HM_OTHER, DB_CT):
        status, _, _ = await api.call("GET", f"/api/v1/studies/{uid}", user="dr-wang")
        assert status == 404, uid
    # the clinic sees only its own priors
    mine = await api.ok("GET", f"/api/v1/studies/{CG_CT}/priors", "cg-clinic")
    assert {p["id"] for p in mine["items"]} == {CG_DX}
    status, _, _ = await api.call("GET", f"/api/v1/studies/{HM_PRIOR}", user="cg-clinic")
    assert status == 404

    # the prior's signed result, read at the city centre, travels with it (结果互认)
    hm = await api.create_request(HM_PRIOR, user="hm-clinic")
    await api.ok("POST", f"/api/v1/reading-requests/{hm['id']}/move", "coord-county",
                 {"centre": "city-imaging", "reason": "专科阅片"})
    await api.ok("POST", f"/api/v1/reading-requests/{hm['id']}/claim", "dr-chen")
    await api.ok("POST", f"/api/v1/reading-requests/{hm['id']}/sign", "dr-chen",
                 {"findings": "双肺纹理增粗", "impression": "慢性支气管炎"})
    by_uid = {p["id"]: p for p in (await api.ok("GET", f"/api/v1/studies/{CG_CT}/priors", "dr-wang"))["items"]}
    (prior_report,) = by_uid[HM_PRIOR]["reports"]
    assert prior_report["impression"] == "慢性支气管炎" and prior_report["centre"] == "city-imaging"
    assert by_uid[CG_DX]["reports"] == []


async def test_expired_lease_returns_the_task(api):
    from services.workflow.leases import WorkflowSettings
    from services.workflow.context import SETTINGS_KEY
    from services.workflow.service import expire_leases
    now = [1_900_000_000.0]
    api.rt.shared[SETTINGS_KEY] = WorkflowSettings(lease_seconds=60, clock=lambda: now[0])
    rid = (await api.create_request(CG_CT))["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-wang")
    now[0] += 61
    assert await expire_leases(api.rt) == 1
    task = await api.ok("GET", f"/api/v1/reading-requests/{rid}", "dr-li")
    assert task["state"] == "queued" and task["claimed_by"] is None
    status, problem, _ = await api.call("POST", f"/api/v1/reading-requests/{rid}/renew", user="dr-wang")
    assert status == 409
    assert (await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-li"))["claimed_by"] == "dr-li"


async def test_me(api):
    me = await api.ok("GET", "/api/v1/me", "dr-wang")
    assert me["user_id"] == "dr-wang" and me["name"] == "王建国" and me["role"] == "reader"
    assert me["centre"] == "county-imaging" and me["organization"] == "county-hospital"
    assert me["token_expires_at"].endswith("Z")
