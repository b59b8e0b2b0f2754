"""Image quality grading (影像质控) and peer review of signed reports, against the api service on
loopback over a real SQLite store, on the manual clock (docs/quality.md)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from services.core.consortium import QualityConfig, parse_consortium
from services.workflow.context import SETTINGS_KEY
from services.workflow.leases import WorkflowSettings, parse_iso
from services.workflow.quality import model

from ..support import EXAMPLE_CONSORTIUM, ManualClock
from .conftest import api  # noqa: F401 - the fixture

CG_CT, CG_DX, DB_CT = "1.2.826.0.1.100.1", "1.2.826.0.1.100.2", "1.2.826.0.1.200.1"


@pytest.fixture
async def world(api):  # noqa: F811
    """The example consortium with no random peer-review share (each test sets its own), a seeded
    sampler, the manual clock at 2030-01-31 16:30 UTC (00:30 on 1 February in Beijing), and
    Operators' Name on the CT studies."""
    api.clock = ManualClock(parse_iso("2030-01-31T15:30:00Z"))
    api.rt.shared[SETTINGS_KEY] = WorkflowSettings(clock=api.clock, rng=random.Random(7))
    api.rt.consortium = dataclasses.replace(api.rt.consortium, quality=QualityConfig(peer_review_percent=0))
    async with api.rt.store.transaction() as tx:
        await tx.update("studies", CG_CT, {"operators": ["LI^JISHI", "王技师"]})
        await tx.update("studies", DB_CT, {"operators": ["ZHAO^JISHI"]})
    return api


def share(api, percent: int) -> None:
    api.rt.consortium = dataclasses.replace(api.rt.consortium, quality=QualityConfig(peer_review_percent=percent))


async def claimed(api, uid: str, reader: str = "dr-li", clinic: str = "cg-clinic") -> dict:
    rid = (await api.create_request(uid, user=clinic))["id"]
    return await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", reader)


async def signed(api, uid: str, reader: str = "dr-li", clinic: str = "cg-clinic", **report) -> dict:
    doc = await claimed(api, uid, reader, clinic)
    return await api.ok("POST", f"/api/v1/reading-requests/{doc['id']}/sign", reader,
                        {"findings": "双肺纹理清晰", "impression": "未见异常", **report})


async def events(api, type_: str) -> list[dict]:
    return [e.event.data for e in await api.rt.store.read_log(0, limit=10_000) if e.event.type == type_]


async def audit(api, action: str) -> list[dict]:
    return await api.rt.store.find("audit", {"action": action, "outcome": "success"}, sort=(("seq", 1),))


# --- grading ----------------------------------------------------------------------------------

async def test_the_holder_grades_and_the_signer_regrades_the_latest_counts(world):
    doc = await claimed(world, CG_CT)
    rid = doc["id"]
    graded = await world.ok("PUT", f"/api/v1/reading-requests/{rid}/quality", "dr-li",
                            {"grade": "B", "reasons": ["exposure", "positioning"], "comment": "曝光偏低"})
    assert graded["state"] == "claimed" and graded["quality"]["grade"] == "B"
    assert graded["quality"]["reasons"] == ["positioning", "exposure"]  # in code order, once each
    await world.ok("POST", f"/api/v1/reading-requests/{rid}/sign", "dr-li", {"findings": "x", "impression": "y"})
    world.clock.advance(600)
    await world.ok("PUT", f"/api/v1/reading-requests/{rid}/quality", "dr-li", {"grade": "A"})
    grading = await world.rt.store.get("quality_gradings", rid)
    assert (grading["grade"], grading["revision"], grading["reader"], grading["centre"]) == \
        ("A", 2, "dr-li", "county-imaging")
    assert grading["operators"] == ["LI^JISHI", "王技师"] and grading["modality"] == "CT"
    emitted = await events(world, "study.quality_graded")
    assert [(e["grade"], e["regrade"]) for e in emitted] == [("B", False), ("A", True)]
    first = emitted[0]
    assert first == {**first, "reading_id": rid, "study_instance_uid": CG_CT, "organization": "chengguan-thc",
                     "modality": "CT", "operators": ["LI^JISHI", "王技师"], "reader": "dr-li",
                     "centre": "county-imaging", "graded_at": "2030-01-31T15:30:00.000Z", "comment": "曝光偏低"}
    assert [a["detail"]["grade"] for a in await audit(world, "quality.grade")] == ["B", "A"]


async def test_a_reject_grade_needs_reasons_and_returns_the_study_for_a_re_scan(world):
    rid = (await claimed(world, CG_CT))["id"]
    status, problem, _ = await world.call("PUT", f"/api/v1/reading-requests/{rid}/quality", user="dr-li",
                                          json={"grade": "reject"})
    assert status == 422 and "needs at least one reason" in problem["detail"]
    status, problem, _ = await world.call("PUT", f"/api/v1/reading-requests/{rid}/quality", user="dr-li",
                                          json={"grade": "D"})
    assert status == 422 and "A (甲片), B (乙片), C (丙片), reject (废片)" in problem["detail"]
    assert await world.rt.store.find("quality_gradings") == [] and await events(world, "study.quality_graded") == []
    doc = await world.ok("PUT", f"/api/v1/reading-requests/{rid}/quality", "dr-li",
                         {"grade": "reject", "reasons": ["motion"]})
    assert doc["state"] == "returned" and doc["return"]["reason_code"] == "image_quality"
    returned = await events(world, "reading.returned")
    assert [(e["request_id"], e["reason_code"]) for e in returned] == [(rid, "image_quality")]
    assert returned[0]["comment"] == "废片 (reject): motion"
    assert (await world.rt.store.get("quality_gradings", rid))["reject"] is True
    # a signed report's study is never graded 废片 afterwards: that is an addendum
    other = await signed(world, CG_DX)
    status, problem, _ = await world.call("PUT", f"/api/v1/reading-requests/{other['id']}/quality",
                                          user="dr-li", json={"grade": "reject", "reasons": ["artefact"]})
    assert status == 422 and "addendum" in problem["detail"]


async def test_return_for_image_quality_is_graded_reject(world):
    """The existing return flow: ``image_quality`` is now the 废片 outcome of grading."""
    rid = (await claimed(world, CG_CT))["id"]
    await world.ok("POST", f"/api/v1/reading-requests/{rid}/return", "dr-li",
                   {"reason_code": "image_quality", "comment": "运动伪影", "quality_reasons": ["motion", "artefact"]})
    grading = await world.rt.store.get("quality_gradings", rid)
    assert (grading["grade"], grading["reasons"], grading["comment"]) == ("reject", ["motion", "artefact"], "运动伪影")
    rid2 = (await claimed(world, CG_DX))["id"]
    await world.ok("POST", f"/api/v1/reading-requests/{rid2}/return", "dr-li", {"reason_code": "image_quality"})
    assert (await world.rt.store.get("quality_gradings", rid2))["reasons"] == ["other"]
    rid3 = (await claimed(world, DB_CT, clinic="db-clinic"))["id"]
    await world.ok("POST", f"/api/v1/reading-requests/{rid3}/return", "dr-li", {"reason_code": "wrong_exam"})
    assert await world.rt.store.get("quality_gradings", rid3) is None  # not about image quality
    assert [e["reason_code"] for e in await events(world, "reading.returned")] == \
        ["image_quality", "image_quality", "wrong_exam"]


async def test_only_the_reader_of_the_study_grades_it(world):
    rid = (await claimed(world, CG_CT))["id"]
    for user, status in (("dr-wang", 409), ("cg-clinic", 403), ("coord-county", 403), ("dr-chen", 404)):
        got, problem, _ = await world.call("PUT", f"/api/v1/reading-requests/{rid}/quality", user=user,
                                           json={"grade": "A"})
        assert got == status, (user, got, problem)
    await world.ok("POST", f"/api/v1/reading-requests/{rid}/sign", "dr-li", {"findings": "x", "impression": "y"})
    got, problem, _ = await world.call("PUT", f"/api/v1/reading-requests/{rid}/quality", user="dr-wang",
                                       json={"grade": "A"})
    assert got == 403 and "only the report's reader" in problem["detail"]
    assert await world.rt.store.find("quality_gradings") == []


async def test_rates_per_site_modality_technician_and_local_month_in_scope(world):
    """Two CT gradings at chengguan (in January and, after midnight in Beijing, February), one at
    dongba; a township sees its own with the comments, the centre all, a month range filters."""
    rid = (await signed(world, CG_CT))["id"]
    await world.ok("PUT", f"/api/v1/reading-requests/{rid}/quality", "dr-li", {"grade": "A"})
    world.clock.advance(3600)  # 2030-01-31T16:30Z = 2030-02-01 00:30 +08:00
    rid2 = (await claimed(world, DB_CT, clinic="db-clinic"))["id"]
    await world.ok("PUT", f"/api/v1/reading-requests/{rid2}/quality", "dr-li",
                   {"grade": "C", "reasons": ["artefact"], "comment": "金属伪影"})
    other = await claimed(world, CG_DX)
    async with world.rt.store.transaction() as tx:
        await tx.update("studies", CG_DX, {"operators": ["LI^JISHI"]})
    await world.ok("PUT", f"/api/v1/reading-requests/{other['id']}/quality", "dr-li",
                   {"grade": "reject", "reasons": ["positioning"], "comment": "体位不正"})

    everything = await world.ok("GET", "/api/v1/quality/rates", "coord-county")
    rows = {(r["organization"], r["modality"], r["operator"], r["month"]): r for r in everything["items"]}
    assert sorted(rows) == [("chengguan-thc", "CT", "LI^JISHI", "2030-01"), ("chengguan-thc", "CT", "王技师", "2030-01"),
                            ("chengguan-thc", "DX", "LI^JISHI", "2030-02"), ("dongba-thc", "CT", "ZHAO^JISHI", "2030-02")]
    assert rows[("chengguan-thc", "CT", "LI^JISHI", "2030-01")] | {} == {
        "organization": "chengguan-thc", "modality": "CT", "operator": "LI^JISHI", "month": "2030-01",
        "graded": 1, "grades": {"A": 1}, "top_rate": 1.0, "reject_rate": 0.0}
    assert rows[("chengguan-thc", "DX", "LI^JISHI", "2030-02")]["reject_rate"] == 1.0

    own = await world.ok("GET", "/api/v1/quality/rates", "cg-clinic")
    assert {r["organization"] for r in own["items"]} == {"chengguan-thc"}
    assert [(c["grade"], c["comment"], c["reader_name"]) for c in own["comments"]] == [("reject", "体位不正", "李秀英")]
    assert own["comments"][0]["graded_at_local"].endswith("+08:00")
    status, problem, _ = await world.call("GET", "/api/v1/quality/rates?organization=dongba-thc", user="cg-clinic")
    assert status == 403
    february = await world.ok("GET", "/api/v1/quality/rates?from=2030-02&to=2030-02", "dr-wang")
    assert {r["month"] for r in february["items"]} == {"2030-02"} and len(february["items"]) == 2
    technician = await world.ok("GET", "/api/v1/quality/rates?operator=ZHAO%5EJISHI", "admin")
    assert [r["organization"] for r in technician["items"]] == ["dongba-thc"]
    status, problem, _ = await world.call("GET", "/api/v1/quality/rates?from=2030-13", user="admin")
    assert status == 422 and "YYYY-MM" in problem["detail"]


async def test_the_consortiums_own_scale(world):
    text = EXAMPLE_CONSORTIUM.read_text("utf-8").replace(
        "    - {code: A, label: 甲片}\n    - {code: B, label: 乙片}\n    - {code: C, label: 丙片}\n"
        "    - {code: reject, label: 废片, reject: true}\n",
        "    - {code: good, label: 优}\n    - {code: fair, label: 可}\n    - {code: bad, label: 差, reject: true}\n")
    world.rt.consortium = parse_consortium(text)
    rid = (await claimed(world, CG_CT))["id"]
    status, problem, _ = await world.call("PUT", f"/api/v1/reading-requests/{rid}/quality", user="dr-li",
                                          json={"grade": "A"})
    assert status == 422 and "good (优), fair (可), bad (差)" in problem["detail"]
    doc = await world.ok("PUT", f"/api/v1/reading-requests/{rid}/quality", "dr-li",
                         {"grade": "bad", "reasons": ["missing_series"]})
    assert doc["state"] == "returned"
    rates = await world.ok("GET", "/api/v1/quality/rates", "admin")
    assert [g["code"] for g in rates["scale"]] == ["good", "fair", "bad"]
    assert rates["items"][0]["reject_rate"] == 1.0


# --- peer review ------------------------------------------------------------------------------

def test_sampling_is_the_configured_share_with_a_seeded_generator():
    reports = [{"id": f"rp-{i}", "critical": False} for i in range(2000)]
    picks = [model.sample_reason(r, 10, random.Random(42 + i)) for i, r in enumerate(reports)]
    again = [model.sample_reason(r, 10, random.Random(42 + i)) for i, r in enumerate(reports)]
    assert picks == again and 150 < picks.count("random") < 250
    rng = random.Random(1)
    assert all(model.sample_reason({"critical": True}, 0, rng) == "critical" for _ in range(50))
    assert all(model.sample_reason({"critical": False}, 0, rng) is None for _ in range(50))
    assert model.sample_reason({"critical": True, "addendum_of": "rp-1"}, 100, rng) is None


async def test_critical_findings_random_share_and_addenda_are_sampled(world):
    share(world, 0)
    plain = await signed(world, CG_CT)
    critical = await signed(world, CG_DX, critical=True, critical_category="气胸")
    assert [r["report_id"] for r in await world.rt.store.find("peer_reviews")] == [critical["report_id"]]
    await world.ok("POST", f"/api/v1/reports/{plain['report_id']}/addenda", "dr-li", {"text": "补充: 左肺小结节"}, status=201)
    reviews = {r["report_id"]: r for r in await world.rt.store.find("peer_reviews")}
    assert {rid: r["reason"] for rid, r in reviews.items()} == {critical["report_id"]: "critical",
                                                                plain["report_id"]: "addendum"}
    # a second addendum does not sample it again: one review per report
    await world.ok("POST", f"/api/v1/reports/{plain['report_id']}/addenda", "dr-li", {"text": "再补充"}, status=201)
    sampled = await events(world, "peer_review.sampled")
    assert [(e["reason"], e["original_reader"], e["original_centre"], e["reviewer"]) for e in sampled] == \
        [("critical", "dr-li", "county-imaging", None), ("addendum", "dr-li", "county-imaging", None)]
    # every report at 100 %
    share(world, 100)
    third = await signed(world, DB_CT, clinic="db-clinic")
    assert (await world.rt.store.get("peer_reviews", f"pr-{third['report_id']}"))["reason"] == "random"


async def test_a_countersigned_report_is_sampled_under_its_author(world):
    share(world, 100)
    doc = await claimed(world, CG_CT, reader="dr-zhou")  # 住院医师: submits for review
    await world.ok("POST", f"/api/v1/reading-requests/{doc['id']}/sign", "dr-zhou", {"findings": "x", "impression": "y"})
    assert await world.rt.store.find("peer_reviews") == []  # not released yet
    released = await world.ok("POST", f"/api/v1/reading-requests/{doc['id']}/countersign", "dr-wang", {})
    review = await world.rt.store.get("peer_reviews", f"pr-{released['report_id']}")
    assert (review["original_reader"], review["reason"]) == ("dr-zhou", "random")


async def test_score_three_goes_to_a_lead_and_upheld_corrects_the_report_by_addendum(world):
    report = await signed(world, CG_CT, critical=True, critical_category="肺栓塞")
    review_id = f"pr-{report['report_id']}"
    path = f"/api/v1/peer-reviews/{review_id}"
    # not his own; not a reader of another centre's line; a score 3 needs a comment
    status, problem, _ = await world.call("POST", f"{path}/score", user="dr-li", json={"score": 1})
    assert status == 403 and "his own report" in problem["detail"]
    status, _, _ = await world.call("POST", f"{path}/score", user="dr-zhao", json={"score": 1})  # county-ecg
    assert status == 404
    status, problem, _ = await world.call("POST", f"{path}/score", user="dr-chen",
                                          json={"score": 3, "clinically_significant": True})
    assert status == 422 and "needs a comment" in problem["detail"]
    status, problem, _ = await world.call("POST", f"{path}/score", user="dr-chen",
                                          json={"score": 1, "clinically_significant": True})
    assert status == 422
    world.clock.advance(3600)
    review = await world.ok("POST", f"{path}/score", "dr-chen",  # the upper centre's reader
                            {"score": 3, "clinically_significant": True, "comment": "漏诊右肺下叶栓塞"})
    assert (review["state"], review["reviewer"], review["reviewer_centre"]) == ("arbitration", "dr-chen", "city-imaging")
    status, _, _ = await world.call("POST", f"{path}/score", user="dr-wang", json={"score": 1})
    assert status == 409  # scored already
    # the reviewer is no lead; the lead must write the correction the clinic gets
    status, problem, _ = await world.call("POST", f"{path}/arbitrate", user="dr-chen",
                                          json={"upheld": True, "comment": "同意"})
    assert status == 403 and "lead" in problem["detail"]
    status, problem, _ = await world.call("POST", f"{path}/arbitrate", user="dr-wang",
                                          json={"upheld": True, "comment": "同意复核意见"})
    assert status == 422 and "addendum" in problem["detail"]
    assert (await world.rt.store.get("peer_reviews", review_id))["state"] == "arbitration"
    decided = await world.ok("POST", f"{path}/arbitrate", "dr-wang",
                             {"upheld": True, "comment": "同意复核意见", "addendum": "更正: 右肺下叶肺动脉栓塞"})
    assert decided["state"] == "upheld" and decided["feedback_to"] == "dr-li" and decided["addendum_id"]
    addendum = await world.rt.store.get("reports", decided["addendum_id"])
    assert addendum["addendum_of"] == report["report_id"] and addendum["reader_id"] == "dr-wang"
    signed_events = [e for e in await events(world, "report.signed") if e["addendum_of"] == report["report_id"]]
    assert [e["findings"] for e in signed_events] == ["更正: 右肺下叶肺动脉栓塞"]  # to the clinic as an addendum
    scored = await events(world, "peer_review.scored")
    assert scored == [{"review_id": review_id, "report_id": report["report_id"], "original_reader": "dr-li",
                       "original_centre": "county-imaging", "reviewer": "dr-chen", "reviewer_centre": "city-imaging",
                       "score": 3, "clinically_significant": True, "comment": "漏诊右肺下叶栓塞",
                       "scored_at": "2030-01-31T16:30:00.000Z"}]
    arbitrated = await events(world, "peer_review.arbitrated")
    assert [(e["review_id"], e["upheld"], e["lead"]) for e in arbitrated] == [(review_id, True, "dr-wang")]
    # back to the original reader: his list shows the outcome
    mine = await world.ok("GET", "/api/v1/peer-reviews", "dr-li")
    assert [(r["id"], r["state"], r["arbitration_comment"]) for r in mine["items"]] == \
        [(review_id, "upheld", "同意复核意见")]
    assert [a["detail"]["upheld"] for a in await audit(world, "peer_review.arbitrate")] == [True]


async def test_dismissed_arbitration_writes_no_addendum(world):
    report = await signed(world, CG_CT, critical=True, critical_category="气胸")
    path = f"/api/v1/peer-reviews/pr-{report['report_id']}"
    await world.ok("POST", f"{path}/score", "dr-chen", {"score": 3, "comment": "少量气胸未描述"})
    status, _, _ = await world.call("POST", f"{path}/arbitrate", user="dr-wang",
                                    json={"upheld": False, "comment": "已描述", "addendum": "x"})
    assert status == 422
    decided = await world.ok("POST", f"{path}/arbitrate", "dr-wang", {"upheld": False, "comment": "报告已描述"})
    assert decided["state"] == "not_upheld" and decided["addendum_id"] is None
    assert (await world.rt.store.get("reports", report["report_id"]))["addenda"] == []


async def test_a_coordinator_assigns_the_second_reader(world):
    report = await signed(world, CG_CT, critical=True, critical_category="气胸")
    path = f"/api/v1/peer-reviews/pr-{report['report_id']}"
    for reviewer in ("dr-li", "dr-zhao", "nobody"):  # the author, another centre's, unknown
        status, problem, _ = await world.call("POST", f"{path}/assign", user="coord-county", json={"reviewer": reviewer})
        assert status == 422, (reviewer, problem)
    assigned = await world.ok("POST", f"{path}/assign", "coord-county", {"reviewer": "dr-wang"})
    assert assigned["reviewer"] == "dr-wang"
    status, problem, _ = await world.call("POST", f"{path}/score", user="dr-chen", json={"score": 1})
    assert status == 404  # no longer his to score
    await world.ok("POST", f"{path}/score", "dr-wang", {"score": 1})


async def test_figures_per_reader_and_centre_readers_see_only_their_own(world):
    share(world, 100)
    reports = [await signed(world, uid, reader=reader, clinic=clinic) for uid, reader, clinic in (
        (CG_CT, "dr-li", "cg-clinic"), (CG_DX, "dr-li", "cg-clinic"), (DB_CT, "dr-wang", "db-clinic"))]
    scores = [("dr-wang", {"score": 1}), ("dr-chen", {"score": 2, "comment": "描述不全"}), ("dr-li", {"score": 1})]
    for report, (reviewer, body) in zip(reports, scores, strict=True):
        await world.ok("POST", f"/api/v1/peer-reviews/pr-{report['report_id']}/score", reviewer, body)
    li = await world.ok("GET", "/api/v1/peer-reviews/stats", "dr-li")
    assert li == {"readers": [{"original_reader": "dr-li", "sampled": 2, "scored": 2, "agreement_rate": 0.5,
                               "minor": 1, "significant": 0, "clinically_significant": 0, "upheld": 0,
                               "not_upheld": 0, "awaiting_arbitration": 0}], "centres": []}
    wang = await world.ok("GET", "/api/v1/peer-reviews/stats", "dr-wang")
    assert [r["original_reader"] for r in wang["readers"]] == ["dr-wang"]
    centre = await world.ok("GET", "/api/v1/peer-reviews/stats", "coord-county")
    assert [(r["original_reader"], r["sampled"]) for r in centre["readers"]] == [("dr-li", 2), ("dr-wang", 1)]
    assert centre["centres"][0] | {} == {**centre["centres"][0], "original_centre": "county-imaging", "sampled": 3,
                                         "scored": 3, "agreement_rate": round(2 / 3, 4)}
    assert (await world.ok("GET", "/api/v1/peer-reviews/stats", "coord-city"))["readers"] == []


async def test_the_grading_comes_with_the_signature(world):
    rid = (await claimed(world, CG_CT))["id"]
    sign = f"/api/v1/reading-requests/{rid}/sign"
    status, problem, _ = await world.call("POST", sign, user="dr-li", json={
        "findings": "x", "impression": "y", "quality": {"grade": "reject", "reasons": ["motion"]}})
    assert status == 422 and "returned for a re-scan, not signed" in problem["detail"]
    status, problem, _ = await world.call("POST", sign, user="dr-li", json={
        "findings": "x", "impression": "y", "quality": {"grade": "B", "reasons": ["nonsense"]}})
    assert status == 422 and "nonsense" in problem["detail"]
    assert (await world.rt.store.get("reading_requests", rid))["state"] == "claimed"
    assert await world.rt.store.find("quality_gradings") == []
    doc = await world.ok("POST", sign, "dr-li", {"findings": "x", "impression": "y",
                                                 "quality": {"grade": "B", "reasons": ["exposure"]}})
    assert doc["state"] == "signed" and doc["quality"]["grade"] == "B"
    assert [e["grade"] for e in await events(world, "study.quality_graded")] == ["B"]
