"""Report templates, two-level sign-off (报告医生 / 审核医生) and every version of a report kept.

The example consortium's county imaging centre releases reports from 主治医师 up (``sign_off``):
dr-zhou (住院医师) submits, dr-li (主治医师) and dr-wang (主任医师) review.
"""

from __future__ import annotations

import pytest

from services.core.runtime import build_runtime
from services.core.settings import Settings
from services.workflow import queries, template_store
from services.workflow.commands import Addendum, Claim, RequestReading, Review, SaveDraft, SendBack, Sign
from services.workflow.errors import Conflict, Forbidden, IllegalTransition, Invalid
from services.workflow.service import execute

from ..support import EXAMPLE_CONSORTIUM

UID = "1.2.826.0.1.3680043.8.498.700"
NORMAL_CHEST = "心、肺、膈未见明显异常。"


async def chest_dr_held_by(world, reader: str) -> dict:
    await world.add_study(UID, "chengguan-thc", ["DX"], announce=False, patient_name="刘^芳")
    doc = await execute(world.rt, RequestReading(UID, "imaging", "routine", "咳嗽一周"), actor=world.who("cg-clinic"))
    return await execute(world.rt, Claim(doc["id"]), actor=world.who(reader))


async def test_shipped_templates_are_loaded_at_start_with_sections_fields_and_normal_text(world):
    current = {t["template_id"]: t for t in await template_store.current(world.store)}
    assert {"chest-dr-pa", "head-ct-plain", "abdomen-us-hbps", "ecg-12-lead"} <= set(current)
    chest = current["chest-dr-pa"]
    assert chest["version"] == 1 and chest["scope"] == "consortium" and chest["name"] == "胸部正位DR"
    assert chest["sections"]["findings"]["title"] == "影像所见"
    assert chest["sections"]["impression"]["normal"] == NORMAL_CHEST
    ecg = current["ecg-12-lead"]
    assert [f["label"] for f in ecg["fields"]][:3] == ["心律", "心率", "电轴"]
    assert ecg["sections"]["findings"]["title"] == "波形" and ecg["sections"]["impression"]["title"] == "结论"
    heart_rate = next(f for f in ecg["fields"] if f["key"] == "heart_rate")
    assert heart_rate["type"] == "number" and heart_rate["unit"] == "次/分"
    # Starting again with the same files adds no version; a changed file adds one, the old one stays.
    assert await template_store.load_shipped(world.store, at="2026-11-18T00:00:00Z") == 0


async def test_a_changed_shipped_template_becomes_a_new_version_and_the_old_one_stays(world, tmp_path):
    directory = tmp_path / "templates"
    directory.mkdir()
    text = (template_store.DEFAULT_DIR / "chest-dr-pa.yaml").read_text("utf-8")
    (directory / "chest-dr-pa.yaml").write_text(text.replace("normal: 心、肺、膈未见明显异常。",
                                                             "normal: 两肺、心、膈未见明显异常。"), "utf-8")
    assert await template_store.load_shipped(world.store, at="2026-11-19T00:00:00Z", directory=directory) == 1
    versions = await template_store.versions(world.store, "chest-dr-pa")
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["sections"]["impression"]["normal"] == NORMAL_CHEST
    assert versions[1]["sections"]["impression"]["normal"] == "两肺、心、膈未见明显异常。"


async def test_a_report_records_its_template_version_and_its_fields_are_checked(world):
    doc = await chest_dr_held_by(world, "dr-wang")
    with pytest.raises(Invalid, match="ctr 1.5 is outside 0.2..0.9"):
        await execute(world.rt, SaveDraft(doc["id"], "x", "y", template_id="chest-dr-pa", fields={"ctr": 1.5}),
                      actor=world.who("dr-wang"))
    with pytest.raises(Invalid, match="lung_fields must be one of"):
        await execute(world.rt, SaveDraft(doc["id"], "x", "y", template_id="chest-dr-pa",
                                          fields={"lung_fields": "很好"}), actor=world.who("dr-wang"))
    with pytest.raises(Invalid, match="has no field"):
        await execute(world.rt, SaveDraft(doc["id"], "x", "y", template_id="chest-dr-pa", fields={"qtc": 400}),
                      actor=world.who("dr-wang"))
    with pytest.raises(Invalid, match="for ecg reports"):
        await execute(world.rt, SaveDraft(doc["id"], "x", "y", template_id="ecg-12-lead"), actor=world.who("dr-wang"))
    await execute(world.rt, SaveDraft(doc["id"], "两肺纹理清晰。", NORMAL_CHEST, template_id="chest-dr-pa",
                                      fields={"ctr": 0.48, "lung_fields": "清晰"}), actor=world.who("dr-wang"))
    signed = await execute(world.rt, Sign(doc["id"]), actor=world.who("dr-wang"))
    report = await queries.report(world.store, signed["report_id"])
    assert (report["template_id"], report["template_version"]) == ("chest-dr-pa", 1)
    assert report["fields"] == {"ctr": 0.48, "lung_fields": "清晰"}
    # In the template's order, with labels and units: what the SR codes item by item.
    assert [(f["label"], f["type"], f["value"]) for f in report["structured"]] == [
        ("肺野", "choice", "清晰"), ("心胸比", "number", 0.48)]
    assert [s["role"] for s in report["signers"]] == ["reporting"] and report["reviewer_id"] is None


async def test_a_juniors_report_is_submitted_not_released_until_a_senior_countersigns(world):
    doc = await chest_dr_held_by(world, "dr-zhou")
    submitted = await execute(world.rt, Sign(doc["id"], "两肺纹理增多。", "支气管炎？"), actor=world.who("dr-zhou"))
    assert submitted["state"] == "submitted" and submitted["report_id"] is None
    assert submitted["submitted_by"] == "dr-zhou" and submitted["claimed_by"] is None
    # Not released: no report for the clinic, no report.signed for delivery and the monitor.
    assert await queries.reports_of(world.store, organization="chengguan-thc") == []
    types = [e.type for e in await world.events(subject=doc["id"])]
    assert "report.submitted" in types and "report.signed" not in types
    # On the centre's worklist, waiting for its review.
    assert [t["id"] for t in await queries.worklist(world.store, centre="county-imaging")] == [doc["id"]]

    with pytest.raises(Forbidden, match="needs the title 主治医师 or above; yours is 住院医师"):
        await execute(world.rt, Review(doc["id"], release=True), actor=world.who("dr-zhou"))
    with pytest.raises(IllegalTransition):
        await execute(world.rt, Sign(doc["id"]), actor=world.who("dr-zhou"))

    edited = await execute(world.rt, Review(doc["id"], impression="急性支气管炎。"), actor=world.who("dr-li"))
    assert edited["state"] == "submitted" and edited["draft"]["impression"] == "急性支气管炎。"
    assert await queries.reports_of(world.store, organization="chengguan-thc") == []

    released = await execute(world.rt, Review(doc["id"], release=True), actor=world.who("dr-li"))
    assert released["state"] == "signed" and released["signed_by"] == "dr-li"
    report = await queries.report(world.store, released["report_id"])
    assert report["reader_id"] == "dr-zhou" and report["reviewer_id"] == "dr-li"
    assert report["findings"] == "两肺纹理增多。" and report["impression"] == "急性支气管炎。"
    assert [(s["role"], s["name"], s["title"], s["licence_number"]) for s in report["signers"]] == [
        ("reporting", "周晓明", "住院医师", "110410000034567"), ("reviewing", "李秀英", "主治医师", "110410000023456")]
    events = [e for e in await world.events(subject=doc["id"]) if e.type in ("report.submitted", "report.signed")]
    assert [e.type for e in events] == ["report.submitted", "report.signed"]
    assert [s["id"] for s in events[1].data["signers"]] == ["dr-zhou", "dr-li"]
    assert events[1].data["reader_id"] == "dr-zhou" and events[1].data["reviewer_name"] == "李秀英"


async def test_a_reviewer_sends_a_report_back_with_a_comment_and_its_author_holds_it_again(world):
    doc = await chest_dr_held_by(world, "dr-zhou")
    await execute(world.rt, Sign(doc["id"], "右肺门增大。", "右肺门占位？"), actor=world.who("dr-zhou"))
    with pytest.raises(Invalid):
        await execute(world.rt, SendBack(doc["id"], " "), actor=world.who("dr-wang"))
    back = await execute(world.rt, SendBack(doc["id"], "请补充侧位片所见，并与既往片对比"), actor=world.who("dr-wang"))
    assert back["state"] == "draft" and back["claimed_by"] == "dr-zhou" and back["lease_expires_at"]
    assert back["sent_back"]["comment"] == "请补充侧位片所见，并与既往片对比"
    with pytest.raises(Conflict):  # only its author holds it now
        await execute(world.rt, Sign(doc["id"]), actor=world.who("dr-li"))
    again = await execute(world.rt, Sign(doc["id"], "右肺门增大，侧位片示肺门区团块影。", "右肺门占位，建议CT增强。"),
                          actor=world.who("dr-zhou"))
    assert again["state"] == "submitted" and again["sent_back"] is None
    released = await execute(world.rt, Review(doc["id"], release=True), actor=world.who("dr-wang"))
    assert released["state"] == "signed"


async def test_every_version_is_kept_with_author_time_and_changes_and_survives_a_restart(world, tmp_path):
    doc = await chest_dr_held_by(world, "dr-zhou")
    rid = doc["id"]
    await execute(world.rt, SaveDraft(rid, "两肺纹理清晰。", NORMAL_CHEST, template_id="chest-dr-pa"),
                  actor=world.who("dr-zhou"))
    world.clock.advance(5)
    await execute(world.rt, SaveDraft(rid, "两肺纹理增多。", NORMAL_CHEST), actor=world.who("dr-zhou"))
    await execute(world.rt, Sign(rid), actor=world.who("dr-zhou"))
    await execute(world.rt, Review(rid, impression="支气管炎。"), actor=world.who("dr-li"))
    signed = await execute(world.rt, Review(rid, release=True), actor=world.who("dr-li"))
    await execute(world.rt, Addendum(signed["report_id"], "补充：建议抗感染治疗后复查。"), actor=world.who("dr-li"))

    async def versions(store):
        return await store.find("report_versions", {"request_id": rid}, sort=(("seq", 1),))

    kept = await versions(world.store)
    assert [(v["seq"], v["action"], v["by"]) for v in kept] == [
        (1, "draft", "dr-zhou"), (2, "draft", "dr-zhou"), (3, "submit", "dr-zhou"), (4, "review", "dr-li"),
        (5, "countersign", "dr-li"), (6, "addendum", "dr-li")]
    assert kept[0]["at"] < kept[1]["at"]
    assert kept[1]["changes"] == {"findings": {"from": "两肺纹理清晰。", "to": "两肺纹理增多。"}}
    assert kept[1]["content"]["template_id"] == "chest-dr-pa"  # kept from the first draft
    assert kept[3]["changes"] == {"impression": {"from": NORMAL_CHEST, "to": "支气管炎。"}}
    assert kept[4]["changes"] == {} and kept[4]["report_id"] == signed["report_id"]
    assert kept[0]["content"]["findings"] == "两肺纹理清晰。"  # nothing overwritten

    # A fresh runtime over the same database file still has every version.
    settings = Settings(data_dir=tmp_path, consortium_path=EXAMPLE_CONSORTIUM,
                        store_url=f"sqlite:///{tmp_path / 'yilian.db'}", bus_url="embedded:",
                        blob_url=f"file://{tmp_path / 'blobs2'}")
    await world.service.stop()
    await world.rt.bus.stop()
    await world.rt.store.close()
    rt = await build_runtime(settings)
    try:
        assert [(v["seq"], v["action"], v["content"]) for v in await versions(rt.store)] == \
            [(v["seq"], v["action"], v["content"]) for v in kept]
    finally:
        await rt.blobs.close()
        await rt.store.close()
