"""Two-level sign-off over real HTTP: a resident's report is invisible to the clinic (its reports,
its view of the request, its results inbox) until a reviewer releases it; then the result carries
both signers; report versions and templates as the API shows them."""

from __future__ import annotations

from services.delivery.service import on_report_signed
from services.workflow import template_store

CG_DX = "1.2.826.0.1.100.2"


async def _deliver_signed(api) -> None:
    """What the delivery service does with every report.signed in the log (idempotent)."""
    for logged in await api.rt.store.read_log(0, limit=100_000, types=["report.signed"]):
        await on_report_signed(api.rt, logged.event)


async def test_a_juniors_report_is_invisible_to_the_clinic_until_released(api):
    await template_store.load_shipped(api.rt.store, at="2026-11-18T00:00:00Z")
    rid = (await api.create_request(CG_DX))["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-zhou")
    template = await api.ok("GET", "/api/v1/report-templates/chest-dr-pa", "dr-zhou")
    start = template["normal_report"]
    assert start["impression"] == "心、肺、膈未见明显异常。" and start["fields"]["ctr"] == 0.45
    submitted = await api.ok("POST", f"/api/v1/reading-requests/{rid}/sign", "dr-zhou", {
        "findings": "左下肺野见小片状模糊影。", "impression": "左下肺炎症可能。", "template_id": "chest-dr-pa",
        "fields": {**start["fields"], "lung_fields": "渗出影"}})
    assert submitted["state"] == "submitted" and submitted["report_id"] is None

    # The clinic: the state, never the text; no report, no result.
    seen = await api.ok("GET", f"/api/v1/reading-requests/{rid}", "cg-clinic")
    assert seen["state"] == "submitted" and "draft" not in seen
    assert "左下肺" not in str(await api.ok("GET", "/api/v1/reading-requests", "cg-clinic"))
    assert (await api.ok("GET", "/api/v1/reports", "cg-clinic"))["items"] == []
    assert (await api.ok("GET", f"/api/v1/reading-requests/{rid}/versions", "cg-clinic"))["items"] == []
    await _deliver_signed(api)
    assert (await api.ok("GET", "/api/v1/results", "cg-clinic"))["items"] == []
    # The centre: waiting for review on the worklist.
    assert [t["state"] for t in (await api.ok("GET", "/api/v1/worklist", "dr-li"))["items"]] == ["submitted"]

    got, body, _ = await api.call("POST", f"/api/v1/reading-requests/{rid}/countersign", user="dr-zhou", json={})
    assert got == 403 and "主治医师" in body["detail"]
    released = await api.ok("POST", f"/api/v1/reading-requests/{rid}/countersign", "dr-wang",
                            {"impression": "左下肺炎。"})
    assert released["state"] == "signed"

    report = await api.ok("GET", f"/api/v1/reports/{released['report_id']}", "cg-clinic")
    assert (report["reader_name"], report["reviewer_name"]) == ("周晓明", "王建国")
    assert (report["template_id"], report["template_version"]) == ("chest-dr-pa", 1)
    assert report["fields"]["lung_fields"] == "渗出影" and report["impression"] == "左下肺炎。"
    await _deliver_signed(api)
    (result,) = (await api.ok("GET", "/api/v1/results", "cg-clinic"))["items"]
    assert [(s["name"], s["role"]) for s in result["signers"]] == [("周晓明", "reporting"), ("王建国", "reviewing")]

    # Versions: the centre sees how it was written, the clinic only the release.
    centre = await api.ok("GET", f"/api/v1/reading-requests/{rid}/versions", "dr-li")
    assert [(v["action"], v["by"]) for v in centre["items"]] == [("submit", "dr-zhou"), ("countersign", "dr-wang")]
    assert centre["items"][1]["changes"] == {"impression": {"from": "左下肺炎症可能。", "to": "左下肺炎。"}}
    clinic = await api.ok("GET", f"/api/v1/reports/{released['report_id']}/versions", "cg-clinic")
    assert [v["action"] for v in clinic["items"]] == ["countersign"]
    assert (await api.call("GET", f"/api/v1/reports/{released['report_id']}/versions", user="db-clinic"))[0] == 404


async def test_templates_are_managed_by_the_admin_and_centre_leads_and_every_version_is_kept(api):
    await template_store.load_shipped(api.rt.store, at="2026-11-18T00:00:00Z")
    listed = await api.ok("GET", "/api/v1/report-templates?kind=imaging&modality=CT", "dr-li")
    assert [t["template_id"] for t in listed["items"]] == ["head-ct-plain"]
    body = {"name": "头颅CT平扫（本中心）", "kind": "imaging", "modalities": ["CT"], "body_part": "HEAD",
            "sections": {"findings": {"title": "影像所见", "normal": "脑实质未见异常密度影。"},
                         "impression": {"title": "诊断意见", "normal": "颅脑CT平扫未见异常。"}}}
    got, problem, _ = await api.call("POST", "/api/v1/report-templates", user="dr-li", json={**body, "id": "x"})
    assert got == 403 and "lead" in problem["detail"]
    got, problem, _ = await api.call("PUT", "/api/v1/report-templates/head-ct-plain", user="dr-wang", json=body)
    assert got == 403  # a lead may not change the consortium's template
    own = await api.ok("POST", "/api/v1/report-templates", "dr-wang", {**body, "id": "head-ct-county"}, status=201)
    assert (own["scope"], own["version"], own["created_by"]) == ("county-imaging", 1, "dr-wang")
    bad = {**body, "fields": [{"key": "shift", "label": "中线移位", "type": "number", "min": 10, "max": 0}]}
    got, problem, _ = await api.call("PUT", "/api/v1/report-templates/head-ct-county", user="dr-wang", json=bad)
    assert got == 422 and "min is above max" in problem["detail"]
    second = await api.ok("PUT", "/api/v1/report-templates/head-ct-county", "dr-wang",
                          {**body, "name": "头颅CT平扫（县中心）", "base_version": 1})
    assert second["version"] == 2
    versions = await api.ok("GET", "/api/v1/report-templates/head-ct-county/versions", "dr-li")
    assert [(v["version"], v["name"]) for v in versions["items"]] == [(1, "头颅CT平扫（本中心）"), (2, "头颅CT平扫（县中心）")]
    # Another centre does not see it; the admin does.
    assert (await api.call("GET", "/api/v1/report-templates/head-ct-county", user="dr-chen"))[0] == 404
    await api.ok("GET", "/api/v1/report-templates/head-ct-county?version=1", "admin")


async def test_the_clinic_never_sees_the_text_of_a_report_being_written(api):
    rid = (await api.create_request(CG_DX))["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-wang")
    await api.ok("PUT", f"/api/v1/reading-requests/{rid}/draft", "dr-wang",
                 {"findings": "右上肺结节，性质待定。", "impression": "肺癌待排。"})
    seen = await api.ok("GET", f"/api/v1/reading-requests/{rid}", "cg-clinic")
    assert seen["state"] == "draft" and "draft" not in seen
    assert "肺癌" not in str(await api.ok("GET", f"/api/v1/reading-requests?study_uid={CG_DX}", "cg-clinic"))
    assert (await api.ok("GET", f"/api/v1/reading-requests/{rid}", "dr-li"))["draft"]["impression"] == "肺癌待排。"


async def test_a_reader_of_several_centres_sees_them_in_me_and_one_worklist(api):
    me = await api.ok("GET", "/api/v1/me", "dr-zhou")
    assert (me["centre"], me["centres"], me["title"]) == ("county-imaging", ["county-imaging", "city-imaging"],
                                                          "住院医师")
    county = (await api.create_request(CG_DX))["id"]
    city = (await api.create_request("1.2.826.0.1.100.1"))["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{city}/move", "admin",
                 {"centre": "city-imaging", "reason": "县中心积压"})
    listed = await api.ok("GET", "/api/v1/worklist", "dr-zhou")
    assert {t["id"]: t["centre"] for t in listed["items"]} == {county: "county-imaging", city: "city-imaging"}
    only = await api.ok("GET", "/api/v1/worklist?centre=city-imaging", "dr-zhou")
    assert [t["id"] for t in only["items"]] == [city]
    got, problem, _ = await api.call("GET", "/api/v1/worklist?centre=city-imaging", user="dr-li")
    assert got == 403 and "county-imaging" in problem["detail"]
    assert [t["id"] for t in (await api.ok("GET", "/api/v1/worklist", "dr-li"))["items"]] == [county]
    assert (await api.ok("GET", f"/api/v1/reading-requests/{city}", "dr-zhou"))["centre"] == "city-imaging"
    assert (await api.call("GET", f"/api/v1/reading-requests/{city}", user="dr-li"))[0] == 404


async def test_a_juniors_addendum_is_submitted_reviewed_and_countersigned_over_http(api):
    rid = (await api.create_request(CG_DX))["id"]
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-wang")
    signed = await api.ok("POST", f"/api/v1/reading-requests/{rid}/sign", "dr-wang",
                          {"findings": "两肺纹理清晰。", "impression": "心肺未见异常。"})
    report = signed["report_id"]
    waiting = await api.ok("POST", f"/api/v1/reports/{report}/addenda", "dr-zhou", {"text": "补充：左肺下叶小结节。"},
                           status=202)
    assert waiting["pending_addendum"]["by"] == "dr-zhou" and waiting["state"] == "signed"
    assert len((await api.ok("GET", "/api/v1/reports", "cg-clinic"))["items"]) == 1
    assert "pending_addendum" not in await api.ok("GET", f"/api/v1/reading-requests/{rid}", "cg-clinic")
    assert [t["id"] for t in (await api.ok("GET", "/api/v1/worklist", "dr-li"))["items"]] == [rid]
    got, problem, _ = await api.call("POST", f"/api/v1/reports/{report}/addenda/countersign", user="dr-zhou", json={})
    assert got == 403 and "主治医师" in problem["detail"]
    edited = await api.ok("PUT", f"/api/v1/reports/{report}/addenda/review", "dr-li",
                          {"text": "补充：左肺下叶背段实性小结节，约4mm。"})
    assert edited["pending_addendum"]["text"].endswith("约4mm。")
    addendum = await api.ok("POST", f"/api/v1/reports/{report}/addenda/countersign", "dr-wang", {}, status=201)
    assert [(s["role"], s["id"]) for s in addendum["signers"]] == [("reporting", "dr-zhou"), ("reviewing", "dr-wang")]
    assert len((await api.ok("GET", "/api/v1/reports", "cg-clinic"))["items"]) == 2
    got, problem, _ = await api.call("POST", f"/api/v1/reports/{report}/addenda/send-back", user="dr-li",
                                     json={"comment": "x"})
    assert got == 409 and "no addendum" in problem["detail"]
