"""GET /api/v1/gateway/refusals: a clinic sees what the gateway turned away from its own modalities
(refused C-STOREs, quarantined instances) and why; nobody else's.  Reads are audited.
(The gateway noting them over real DICOM: tests/gateway/test_ownership.py.)"""

from __future__ import annotations

from services.pacs_gateway.refusals import note_doc, write


async def test_a_clinic_sees_its_own_refusals_and_quarantines_newest_first(api):
    docs = [note_doc(kind="refused", organization="dongba-thc", calling_ae="DB_DR1", sop_instance_uid="1.2.3.1",
                     status=0x0124, reason="study belongs to another organisation", peer="127.0.0.1:5000"),
            note_doc(kind="quarantined", organization="dongba-thc", calling_ae="DB_DR1", sop_instance_uid="1.2.3.2",
                     status=None, reason="SOP Instance UID already stored in another series", study_uid="1.2.3"),
            note_doc(kind="refused", organization="chengguan-thc", calling_ae="CG_CT1", sop_instance_uid="1.2.9.1",
                     status=0xC211, reason="Series Instance UID missing")]
    docs[1]["at"] = "2099-01-01T00:00:00.000Z"  # the newest
    await write(api.rt.store, docs)
    body = await api.ok("GET", "/api/v1/gateway/refusals", "db-clinic")
    assert [d["sop_instance_uid"] for d in body["items"]] == ["1.2.3.2", "1.2.3.1"]
    assert body["items"][1]["status"] == "0x0124"
    only = await api.ok("GET", "/api/v1/gateway/refusals?kind=quarantined", "db-clinic")
    assert [d["kind"] for d in only["items"]] == ["quarantined"]
    # another clinic: its own only, even when it names dongba-thc
    cg = await api.ok("GET", "/api/v1/gateway/refusals?organization=dongba-thc", "cg-clinic")
    assert [d["organization"] for d in cg["items"]] == ["chengguan-thc"]
    assert len((await api.ok("GET", "/api/v1/gateway/refusals", "admin"))["items"]) == 3
    assert [d["organization"] for d in (await api.ok(
        "GET", "/api/v1/gateway/refusals?organization=dongba-thc", "admin"))["items"]] == ["dongba-thc"] * 2
    [read] = await api.rt.store.find("audit", {"action": "gateway.refusals", "actor": "db-clinic",
                                               "detail.count": 1})
    assert read["organization"] == "dongba-thc"
    status, problem, _ = await api.call("GET", "/api/v1/gateway/refusals?kind=lost", user="db-clinic")
    assert status == 422 and "kind" in problem["detail"]
