"""结果互认 through the API: an order or a reading request for a patient with a still-valid
recognised result of the same exam (at another township, by the consortium identity) is held
with the prior and needs a national exception reason; the decision is recorded and counted;
after the validity period it is not held.  The prior shows the recognised examination and,
apart, the doctor's conclusion (not recognised)."""

from __future__ import annotations

from services.workflow.leases import parse_iso

from ..api.conftest import ZHANG_SAN, study_doc
from .conftest import CG_CT, events, signed_report

RESIDENT_ID = "410101196001011234"  # 张三 (ZHANG_SAN's consortium identity)
ORDER = {"patient_id": "HM777", "patient_name": "ZHANG^SAN", "kind": "imaging", "modality": "CT", "body_part": "CHEST",
         "clinical_question": "咳嗽两周", "requesting_physician": "赵^医生", "scheduled_at": "2026-12-03T09:30:00+08:00",
         "resident_id": RESIDENT_ID}
HM_CT = "1.2.826.0.1.100.5"


async def chest(api, uid: str) -> None:
    async with api.rt.store.transaction() as tx:
        await tx.update("studies", uid, {"body_part": "CHEST"})


async def test_a_repeat_inside_the_validity_is_held_for_a_reason_and_not_after_it(api, clock):
    clock.now = parse_iso("2026-12-01T02:00:00Z")
    await chest(api, CG_CT)  # 胸部CT of 2026-11-23 at chengguan-thc: recognised until 2026-12-23
    report = await signed_report(api, impression="右肺上叶小结节，建议随访")

    # Hongmiao orders the same exam for the same person (his resident ID): held, with the prior.
    status, problem, _ = await api.call("POST", "/api/v1/orders", user="hm-clinic", json=ORDER)
    assert status == 409 and problem["type"].endswith("recognised-result"), problem
    assert "2026-12-23" in problem["detail"] and problem["item"]["id"] == "ct-chest"
    (prior,) = problem["priors"]
    assert prior["study_uid"] == CG_CT and prior["organization_name"] == "城关镇卫生院" and prior["mark"] == "HR"
    assert prior["examination"]["recognised"] is True  # the examination is what is recognised …
    assert prior["conclusion"]["recognised"] is False and prior["conclusion"]["impression"] == "右肺上叶小结节，建议随访"
    assert prior["conclusion"]["report_id"] == report["report_id"]  # … not the doctor's conclusion
    assert set(problem["reasons"]) >= {"condition_changed", "result_unclear", "emergency", "patient_request"}
    assert await api.rt.store.count("orders") == 0

    for bad in ({"reason": "because"}, {"reason": "other"}):
        assert (await api.call("POST", "/api/v1/orders", user="hm-clinic", json={**ORDER, "recognition": bad}))[0] == 422
    order = await api.ok("POST", "/api/v1/orders", "hm-clinic", {**ORDER, "recognition": {"reason": "condition_changed"}},
                         status=201)
    assert order["recognition"]["reason"] == "condition_changed" and order["recognition"]["prior_study_uid"] == CG_CT
    (ev,) = await events(api, "recognition.decided")
    assert (ev["decision"], ev["reason"], ev["subject"]) == ("repeat", "condition_changed", f"order/{order['id']}")

    # Looking before ordering, and using the prior instead (a repeat avoided).
    found = await api.ok("POST", "/api/v1/recognition/check", "hm-clinic",
                         {"patient_id": "HM777", "resident_id": RESIDENT_ID, "modality": "CT", "body_part": "CHEST"})
    assert [p["study_uid"] for p in found["priors"]] == [CG_CT]
    used = await api.ok("POST", "/api/v1/recognition/decisions", "hm-clinic", {
        "patient_id": "HM777", "resident_id": RESIDENT_ID, "modality": "CT", "body_part": "CHEST",
        "prior_study_uid": CG_CT}, status=201)
    assert used["decision"] == "use_prior"
    # Another clinic's patient without the identity: nothing to recognise, and nothing learnt.
    assert (await api.ok("POST", "/api/v1/recognition/check", "db-clinic",
                         {"patient_id": "HM777", "modality": "CT", "body_part": "CHEST"}))["priors"] == []

    # A reading request for a new chest CT of his at Hongmiao is held the same way.
    async with api.rt.store.transaction() as tx:
        await tx.put("studies", study_doc(HM_CT, organization="hongmiao-thc", patient_id="HM777", patient_name="ZHANG^SAN",
                                          birth_date="19600101", study_date="20261201", modalities=["CT"],
                                          identity=ZHANG_SAN, body_part="CHEST"))
    body = {"study_uid": HM_CT, "kind": "imaging", "priority": "routine", "clinical_question": "复查"}
    status, problem, _ = await api.call("POST", "/api/v1/reading-requests", user="hm-clinic", json=body)
    assert status == 409 and problem["priors"][0]["study_uid"] == CG_CT, problem
    rr = await api.ok("POST", "/api/v1/reading-requests", "hm-clinic",
                      {**body, "recognition": {"reason": "other", "comment": "外院结果无法调阅原始影像"}}, status=201)
    assert rr["recognition"]["reason"] == "other"

    figures = (await api.ok("GET", "/api/v1/monitor/referrals", "admin"))["recognition"]
    assert (figures["used_prior"], figures["repeats_avoided"], figures["repeated"]) == (1, 1, 2)
    assert figures["by_reason"] == {"condition_changed": 1, "other": 1}

    # After the validity period the old result no longer holds it (the new CT of 2026-12-01 does), then nothing.
    clock.now = parse_iso("2026-12-24T02:00:00Z")  # 2026-12-24 in China: past 2026-12-23
    status, problem, _ = await api.call("POST", "/api/v1/orders", user="hm-clinic", json=ORDER)
    assert status == 409 and [p["study_uid"] for p in problem["priors"]] == [HM_CT]
    clock.now = parse_iso("2026-12-31T16:00:00Z")  # 2027-01-01 in China: past 2026-12-31
    late = await api.ok("POST", "/api/v1/orders", "hm-clinic", ORDER, status=201)
    assert late["recognition"] is None
