"""Retention periods and sealing (封存) through the API, on a real SQLite store and real files (issue 14)."""

from __future__ import annotations

import hashlib

from services.core import sealing
from services.pacs_gateway.ingest import sweep_orphans

CG_CT, CG_DX, DB_CT = "1.2.826.0.1.100.1", "1.2.826.0.1.100.2", "1.2.826.0.1.200.1"
LONG_AGO = "1990-01-02T03:04:05.000Z"


async def audit_of(api, **where):
    return await api.rt.store.find("audit", where, sort=(("seq", 1),))


async def age(api, study_uid: str, at: str = LONG_AGO, **fields) -> None:
    """Make a seeded study's every time ``at`` (as if received then)."""
    await api.rt.store.apply([], lambda _: _put_study(api, study_uid, at, fields))


def _put_study(api, uid, at, fields):
    from services.core.store.port import Batch
    doc = api.rt.store.get_now("studies", uid)
    return Batch(puts=[("studies", {**doc, "first_received_at": at, "last_update_at": at, **fields})])


async def file_instances(api, study_uid: str) -> list[dict]:
    """Give the seeded instances of a study real files (the gateway would have written them)."""
    docs = await api.rt.store.find("instances", {"study_uid": study_uid})
    for doc in docs:
        body = f"DICM file of {doc['id']}".encode() * 100
        sha = hashlib.sha256(body).hexdigest()
        key = f"{study_uid}/{doc['series_uid']}/{doc['id']}.{sha[:16]}.dcm"
        await api.rt.blobs.put_bytes(key, [body], sha256=sha)
        doc.update(blob_key=key, sha256=sha, size=len(body))
        async with api.rt.store.transaction() as tx:
            await tx.put("instances", doc)
    return docs


async def put_report(api, report_id: str, study_uid: str, signed_at: str, **fields) -> None:
    async with api.rt.store.transaction() as tx:
        await tx.put("reports", {"id": report_id, "study_uid": study_uid, "organization": "chengguan-thc",
                                 "findings": "双肺纹理清晰。", "impression": "心肺未见异常。",
                                 "signed_at": signed_at, "addenda": [], **fields})


async def test_a_study_inside_its_retention_period_is_not_deleted_and_the_attempt_is_audited(api):
    status, body, _ = await api.call("DELETE", f"/api/v1/studies/{CG_CT}", user="admin")
    assert status == 409 and body["type"].endswith(":retention-period"), body
    retention = body["retention"]
    assert retention["record_class"] == "inpatient" and retention["years"] == 30  # class unknown: the longer
    assert retention["last_activity"] == "2026-11-23T10:00:10.000Z"
    assert retention["retained_until"] == "2056-11-23T10:00:10.000Z"
    assert await api.rt.store.get("studies", CG_CT) is not None
    assert await api.rt.store.count("instances", {"study_uid": CG_CT}) == 1
    status, _, _ = await api.call("DELETE", f"/api/v1/studies/{CG_CT}", user="cg-clinic")  # its own: 403
    assert status == 403
    status, _, _ = await api.call("DELETE", f"/api/v1/studies/{CG_CT}", user="db-clinic")  # not its own: 404
    assert status == 404
    status, body, _ = await api.call("DELETE", "/api/v1/studies/1.2.3.999", user="admin")
    assert status == 404
    refused, forbidden, hidden, unknown = await audit_of(api, action="study.delete")
    assert (unknown["outcome"], unknown["resource"]) == ("not_found", "study/1.2.3.999")
    assert (forbidden["outcome"], forbidden["actor"]) == ("forbidden", "cg-clinic")
    assert (hidden["outcome"], hidden["actor"]) == ("not_found", "db-clinic")
    assert refused["outcome"] == "refused" and refused["actor"] == "admin"
    assert refused["detail"]["retention"]["retained_until"] == "2056-11-23T10:00:10.000Z"


async def test_a_study_past_its_period_is_deleted_with_its_files(api):
    await age(api, DB_CT)
    (instance,) = await file_instances(api, DB_CT)
    assert await api.rt.blobs.exists(instance["blob_key"])
    result = await api.ok("DELETE", f"/api/v1/studies/{DB_CT}", "admin")
    assert result["deleted"] == f"study/{DB_CT}" and result["instances"] == 1
    assert result["retention"]["retained_until"] == "2020-01-02T03:04:05.000Z"
    assert await api.rt.store.get("studies", DB_CT) is None
    assert await api.rt.store.count("instances", {"study_uid": DB_CT}) == 0
    assert await api.rt.store.count("series", {"study_uid": DB_CT}) == 0
    assert not await api.rt.blobs.exists(instance["blob_key"])
    (done,) = await audit_of(api, action="study.delete")
    assert done["outcome"] == "success" and done["organization"] == "dongba-thc"


async def test_record_class_and_later_activity_decide_the_period(api):
    sixteen_years_ago = "2010-06-01T00:00:00.000Z"
    await age(api, CG_DX, sixteen_years_ago, record_class="inpatient")
    status, body, _ = await api.call("DELETE", f"/api/v1/studies/{CG_DX}", user="admin")
    assert status == 409 and body["retention"]["retained_until"] == "2040-06-01T00:00:00.000Z"
    # a report signed recently is activity on the study: its period runs from then
    await age(api, CG_DX, sixteen_years_ago, record_class="outpatient")
    await put_report(api, "rp-recent", CG_DX, "2025-03-02T08:00:00.000Z")
    status, body, _ = await api.call("DELETE", f"/api/v1/studies/{CG_DX}", user="admin")
    assert status == 409 and body["retention"]["retained_until"] == "2040-03-02T08:00:00.000Z"
    status, body, _ = await api.call("DELETE", "/api/v1/reports/rp-recent", user="admin")
    assert status == 409 and body["retention"]["record_class"] == "outpatient"
    # an old report of an outpatient study goes; its study's other activity does not hold it
    await put_report(api, "rp-old", CG_DX, sixteen_years_ago)
    result = await api.ok("DELETE", "/api/v1/reports/rp-old", "admin")
    assert result["retention"]["retained_until"] == "2025-06-01T00:00:00.000Z"
    assert await api.rt.store.get("reports", "rp-old") is None
    # ... unless an addendum was written since
    await put_report(api, "rp-amended", CG_DX, sixteen_years_ago, addenda=["rp-recent"])
    status, body, _ = await api.call("DELETE", "/api/v1/reports/rp-amended", user="admin")
    assert status == 409
    outcomes = [(r["resource"], r["outcome"]) for r in await audit_of(api, action="report.delete")]
    assert outcomes == [("report/rp-recent", "refused"), ("report/rp-old", "success"),
                        ("report/rp-amended", "refused")]


async def test_sealing_freezes_a_copy_that_later_changes_do_not_touch(api):
    instances = await file_instances(api, CG_CT) + await file_instances(api, CG_DX)
    await put_report(api, "rp-1", CG_CT, "2026-11-23T11:00:00.000Z")
    body = {"organization": "chengguan-thc", "patient_id": "CG001", "reason": "医疗纠纷，患者家属申请封存"}
    for user in ("cg-clinic", "dr-wang"):
        status, _, _ = await api.call("POST", "/api/v1/seals", user=user, json=body)
        assert status == 403
    seal = await api.ok("POST", "/api/v1/seals", "auditor", body, status=201)
    assert seal["state"] == "sealed" and seal["studies"] == [CG_CT, CG_DX] and "reports" not in seal
    assert {i["sha256"] for i in seal["manifest"]["instances"]} == {i["sha256"] for i in instances}
    assert [r["id"] for r in seal["manifest"]["reports"]] == ["rp-1"]
    status, again, _ = await api.call("POST", "/api/v1/seals", user="admin", json=body)
    assert status == 409 and again["type"].endswith(":sealed")

    checked = await api.ok("GET", f"/api/v1/seals/{seal['id']}/verification", "auditor")
    assert checked["intact"] and checked["changed_since"] == []

    # later changes: the report is amended, an instance re-sent with other content, a study deleted
    async with api.rt.store.transaction() as tx:
        await tx.update("reports", "rp-1", {"impression": "左下肺炎。"})
        await tx.update("instances", instances[0]["id"], {"sha256": "0" * 64})
    await age(api, CG_DX)
    status, refused, _ = await api.call("DELETE", f"/api/v1/studies/{CG_DX}", user="admin")
    assert status == 409 and refused["type"].endswith(":sealed") and refused["seal_id"] == seal["id"]
    checked = await api.ok("GET", f"/api/v1/seals/{seal['id']}/verification", "admin")
    assert checked["intact"], checked["problems"]
    assert sorted(checked["changed_since"]) == sorted([f"instance/{instances[0]['id']}", "report/rp-1"])
    full = await api.ok("GET", f"/api/v1/seals/{seal['id']}", "auditor")
    assert full["reports"]["rp-1"]["impression"] == "心肺未见异常。"  # as sealed

    # the gateway's sweep of unreferenced files leaves the sealed copies alone
    await sweep_orphans(api.rt, older_than=-3600)
    assert (await api.ok("GET", f"/api/v1/seals/{seal['id']}/verification", "admin"))["intact"]

    # a sealed copy changed behind the system's back is found
    sealed_file = api.rt.blobs.local_path(seal["manifest"]["instances"][1]["sealed_key"])
    sealed_file.write_bytes(b"tampered")
    checked = await api.ok("GET", f"/api/v1/seals/{seal['id']}/verification", "auditor")
    assert not checked["intact"]
    assert checked["problems"] == [f"sealed copy of instance {seal['manifest']['instances'][1]['sop_instance_uid']}"
                                   " was altered"]

    listed = await api.ok("GET", "/api/v1/seals?patient_id=CG001&state=sealed", "auditor")
    assert [s["id"] for s in listed["items"]] == [seal["id"]]

    unsealed = await api.ok("POST", f"/api/v1/seals/{seal['id']}/unseal", "admin", {"reason": "纠纷已调解"})
    assert unsealed["state"] == "unsealed" and unsealed["unsealed_by"] == "admin"
    status, _, _ = await api.call("POST", f"/api/v1/seals/{seal['id']}/unseal", user="admin", json={"reason": "x"})
    assert status == 409
    await api.ok("DELETE", f"/api/v1/studies/{CG_DX}", "admin")  # retention over, no longer sealed
    # the frozen copy stays after unsealing
    assert await api.rt.blobs.exists(seal["manifest"]["instances"][0]["sealed_key"])

    actions = [(r["action"], r["outcome"]) for r in await audit_of(api)
               if r["action"].startswith(("patient.", "study.delete"))]
    assert actions == [("patient.seal", "success"), ("patient.seal", "refused"), ("study.delete", "refused"),
                       ("patient.unseal", "success"), ("patient.unseal", "refused"), ("study.delete", "success")]
    (unseal_rec,) = await audit_of(api, action="patient.unseal", outcome="success")
    assert unseal_rec["detail"]["reason"] == "纠纷已调解" and unseal_rec["actor"] == "admin"
    assert (await api.ok("GET", "/api/v1/audit/verification", "auditor"))["intact"]


async def test_sealing_an_unknown_patient_or_a_bad_body_is_refused(api):
    status, body, _ = await api.call("POST", "/api/v1/seals", user="admin",
                                     json={"organization": "chengguan-thc", "patient_id": "NOPE", "reason": "x"})
    assert status == 404
    status, body, _ = await api.call("POST", "/api/v1/seals", user="admin", json={"patient_id": "CG001"})
    assert status == 422 and "organization" in body["detail"]
    status, _, _ = await api.call("GET", "/api/v1/seals/seal-nope", user="auditor")
    assert status == 404
    assert sealing.SEALED_PREFIX == "sealed/"
