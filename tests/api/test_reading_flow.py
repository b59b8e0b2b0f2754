"""Happy paths through the workflow commands over real HTTP: clinic asks, reader reads, result returns."""

from __future__ import annotations

import asyncio

CT = "1.2.826.0.1.100.1"


async def test_request_claim_draft_sign_result(api):
    created = await api.create_request(CT, priority="urgent", green_channel="胸痛")
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
    assert set(by_uid) == {CT, "1.2.826.0.1.100.2"}
    assert by_uid[CT]["reading_requests"][0]["state"] == "signed"
