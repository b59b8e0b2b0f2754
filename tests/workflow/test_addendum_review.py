"""A junior's addendum (补充报告) is submitted and reviewed like a report: the clinic sees it only
once a reviewer countersigns it, both names are on it (and on its document), a version each step.

The example consortium's county imaging centre releases from 主治医师 up: dr-zhou (住院医师)
submits, dr-li (主治医师) and dr-wang (主任医师) review."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.api.routes.reader import WORKLIST_FIELDS
from services.workflow import policy, queries
from services.workflow.commands import (Addendum, Claim, RequestReading, ReviewAddendum, SendBackAddendum,
                                        Sign)
from services.workflow.errors import Conflict, Forbidden
from services.workflow.service import execute

UID = "1.2.826.0.1.3680043.8.498.900"


async def _released_report(world) -> dict:
    await world.add_study(UID, "chengguan-thc", ["DX"], announce=False, patient_name="刘^芳")
    doc = await execute(world.rt, RequestReading(UID, "imaging", "routine", "咳嗽一周"), actor=world.who("cg-clinic"))
    await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang"))
    signed = await execute(world.rt, Sign(doc["id"], "两肺纹理清晰。", "心肺未见异常。"), actor=world.who("dr-wang"))
    return await queries.report(world.store, signed["report_id"])


async def test_a_juniors_addendum_waits_for_review_and_is_released_with_both_names(world):
    await _junior_addendum_reviewed(world)


async def _junior_addendum_reviewed(world):
    original = await _released_report(world)
    zhou, li, wang, clinic = (world.who(u) for u in ("dr-zhou", "dr-li", "dr-wang", "cg-clinic"))
    released_before = len(await world.events(types=("report.signed",)))

    request = await execute(world.rt, Addendum(original["id"], "补充：左肺下叶见小结节，约4mm。"), actor=zhou)
    assert request["state"] == "signed" and request["pending_addendum"]["by"] == "dr-zhou"
    # Nothing reaches the clinic: no addendum report, no report.signed, the request's view without it.
    assert await world.store.count("reports", {"addendum_of": original["id"]}) == 0
    assert len(await world.events(types=("report.signed",))) == released_before
    assert "pending_addendum" not in policy.request_view(clinic, request)
    # It waits on the centre's worklist for a reviewer; the author may not review it, nor add another.
    row = next(t for t in await queries.worklist(world.store, centre="county-imaging") if t["id"] == request["id"])
    assert "pending_addendum" in WORKLIST_FIELDS and row["pending_addendum"]["text"].startswith("补充")
    with pytest.raises(Forbidden, match="主治医师 or above; yours is 住院医师"):
        await execute(world.rt, ReviewAddendum(original["id"], release=True), actor=zhou)
    with pytest.raises(Conflict, match="waits for review"):
        await execute(world.rt, Addendum(original["id"], "再补充"), actor=zhou)

    # Sent back with a comment; written again; edited by one reviewer; countersigned by another.
    back = await execute(world.rt, SendBackAddendum(original["id"], "请注明结节位置的层面"), actor=li)
    assert back["pending_addendum"] is None and back["addendum_sent_back"]["comment"] == "请注明结节位置的层面"
    assert not back["on_worklist"]
    await execute(world.rt, Addendum(original["id"], "补充：左肺下叶背段（Im 45）见小结节，约4mm。"), actor=zhou)
    edited = await execute(world.rt, ReviewAddendum(original["id"], "补充：左肺下叶背段见实性小结节，约4mm，建议年度复查。"),
                           actor=li)
    assert edited["pending_addendum"]["text"].endswith("建议年度复查。")
    addendum = await execute(world.rt, ReviewAddendum(original["id"], release=True), actor=wang)
    assert (addendum["addendum_of"], addendum["reader_name"], addendum["reviewer_name"]) == (
        original["id"], "周晓明", "王建国")
    assert [(s["role"], s["name"]) for s in addendum["signers"]] == [("reporting", "周晓明"), ("reviewing", "王建国")]
    assert addendum["text"].endswith("建议年度复查。")
    assert (await queries.report(world.store, original["id"]))["addenda"] == [addendum["id"]]
    (event,) = [e for e in await world.events(types=("report.signed",)) if e.data.get("addendum_of")]
    assert [s["name"] for s in event.data["signers"]] == ["周晓明", "王建国"]
    done = await queries.get_request(world.store, request["id"])
    assert done["pending_addendum"] is None and not done["on_worklist"]

    # A version each step; the clinic sees the releases only.
    versions = await world.store.find("report_versions", {"request_id": request["id"]}, sort=(("seq", 1),))
    assert [(v["action"], v["by"]) for v in versions] == [
        ("sign", "dr-wang"), ("addendum_submit", "dr-zhou"), ("addendum_send_back", "dr-li"),
        ("addendum_submit", "dr-zhou"), ("addendum_review", "dr-li"), ("addendum_countersign", "dr-wang")]
    assert versions[4]["changes"]["addendum"]["to"].endswith("建议年度复查。") and versions[-1]["changes"] == {}
    assert versions[2]["comment"] == "请注明结节位置的层面"
    assert [v["action"] for v in versions if v["action"] in policy.RELEASED_VERSIONS] == ["sign", "addendum_countersign"]
    return event


async def test_the_addendum_document_names_both_signers(world):
    from services.core.localtime import LocalTime
    from services.delivery.model import result_from_report
    from services.delivery.pdf import render
    from services.delivery.settings import DEFAULT_FONT

    from ..delivery.test_documents import STUDY
    from ..delivery.test_linebreak import pdf_lines
    from ..delivery.test_report_document import _picture
    if not Path(DEFAULT_FONT).is_file():
        pytest.skip("fonts-wqy-microhei is not installed")
    event = await _junior_addendum_reviewed(world)
    result = result_from_report(event.data, at=event.data["signed_at"]) | {"sr_sop_instance_uid": "1.2.3.4"}
    data = render(result, study=STUDY, institution="城关镇卫生院", centre="县域影像诊断中心", font=DEFAULT_FONT,
                  local=LocalTime.named())
    text = "\n".join(pdf_lines(data))
    for expected in ("医学影像诊断报告（补充报告）", "报告医生：周晓明", "审核医生：王建国", "建议年度复查"):
        assert expected in text, (expected, text)
    _picture(data, "report-addendum-countersigned")
