"""Record class (门诊 / 住院) and who asked (申请科室 / 申请医生) travel from the order, the reading
request or the study's DICOM header to the report, and the report's retention follows its class
(电子病历应用管理规范（试行）第19条: outpatient 15 years, inpatient 30 years)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.core.deletion import Refused, delete_report
from services.workflow.commands import Claim, RequestReading, Sign
from services.workflow.errors import Invalid
from services.workflow.orders.commands import ChangeOrder, CreateOrder
from services.workflow.orders.service import request_id_for
from services.workflow.service import execute

from ..support import wait_for
from ..workflow.conftest import world  # noqa: F401 - the fixture
from .test_order_flow import ORDER, _study

REPORT = {"findings": "脑实质未见异常密度影。", "impression": "颅脑CT平扫未见异常。"}


async def _signed_report(world, request_id: str) -> dict:  # noqa: F811
    await execute(world.rt, Claim(request_id), actor=world.who("dr-wang"))
    doc = await execute(world.rt, Sign(request_id, **REPORT), actor=world.who("dr-wang"))
    return await world.store.get("reports", doc["report_id"])


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _years_after(text: str, years: int, days: int = 0) -> datetime:
    moment = _at(text)
    return moment.replace(year=moment.year + years) + timedelta(days=days)


async def _deletable(world, report: dict, now: datetime) -> bool:  # noqa: F811
    try:
        await delete_report(world.store, world.rt.consortium.retention, report["id"], now=now, actor="admin",
                            role="admin", remote=None)
    except Refused as exc:
        assert exc.slug == "retention-period", exc.detail
        return False
    return True


async def test_the_orders_record_class_and_requester_reach_the_report_and_decide_its_retention(world):  # noqa: F811
    out = await execute(world.rt, CreateOrder(**ORDER, record_class="outpatient", requesting_department="神经内科"),
                        actor=world.who("cg-clinic"))
    inp = await execute(world.rt, CreateOrder(**{**ORDER, "patient_id": "P2"}, record_class="inpatient",
                                              requesting_department="神经内科病房"), actor=world.who("cg-clinic"))
    assert (out["record_class"], out["requesting_department"]) == ("outpatient", "神经内科")
    reports = []
    for uid, order in (("1.2.3.41", out), ("1.2.3.42", inp)):
        event = await _study(world, uid, "chengguan-thc", order["accession_number"], patient_id=order["patient_id"])
        await wait_for(lambda: world.handled(event), timeout=5, what="study.received handled")
        request = await world.store.get("reading_requests", request_id_for(order["id"]))
        assert request["record_class"] == order["record_class"]
        reports.append(await _signed_report(world, request["id"]))
    outpatient, inpatient = reports
    assert (outpatient["record_class"], outpatient["requesting_department"], outpatient["requesting_physician"]) == (
        "outpatient", "神经内科", "李^医生")
    assert inpatient["record_class"] == "inpatient"
    signed = [e for e in await world.events(types=("report.signed",))]
    assert {e.data["record_class"] for e in signed} == {"outpatient", "inpatient"}

    # The clock: 15 years and a day after signing the outpatient report may go, the inpatient one not.
    after_15 = _years_after(outpatient["signed_at"], 15, days=1)
    assert not await _deletable(world, outpatient, _years_after(outpatient["signed_at"], 14, days=360))
    assert not await _deletable(world, inpatient, after_15)
    assert not await _deletable(world, inpatient, _years_after(inpatient["signed_at"], 29, days=360))
    assert await _deletable(world, outpatient, after_15)
    assert await _deletable(world, inpatient, _years_after(inpatient["signed_at"], 30, days=1))


async def test_a_reading_request_takes_its_class_from_the_body_the_order_or_the_studys_admission_id(world):  # noqa: F811
    # The study's header: an Admission ID made it inpatient, its Requesting Service is the department.
    await world.add_study("1.2.3.51", "chengguan-thc", ["DX"], announce=False)
    async with world.store.transaction() as tx:
        await tx.update("studies", "1.2.3.51", {"record_class": "inpatient", "requesting_department": "呼吸内科",
                                                "referring_physician": "王^医生"})
    doc = await execute(world.rt, RequestReading("1.2.3.51", "imaging", "routine", "咳嗽"), actor=world.who("cg-clinic"))
    assert (doc["record_class"], doc["requesting_department"], doc["requesting_physician"]) == (
        "inpatient", "呼吸内科", "王^医生")  # no Requesting Physician: the Referring Physician
    # The clinic's own word wins; a class the consortium has no period for is refused, nothing written.
    await world.add_study("1.2.3.52", "chengguan-thc", ["DX"], announce=False)
    with pytest.raises(Invalid, match="record_class must be one of inpatient, outpatient"):
        await execute(world.rt, RequestReading("1.2.3.52", "imaging", "routine", "咳嗽", record_class="门诊"),
                      actor=world.who("cg-clinic"))
    assert await world.store.count("reading_requests", {"study_uid": "1.2.3.52"}) == 0
    doc = await execute(world.rt, RequestReading("1.2.3.52", "imaging", "routine", "咳嗽", record_class="outpatient"),
                        actor=world.who("cg-clinic"))
    assert doc["record_class"] == "outpatient" and doc["requesting_department"] is None
    # An order's class is checked too, and can be changed before the exam.
    with pytest.raises(Invalid, match="record_class"):
        await execute(world.rt, CreateOrder(**ORDER, record_class="vip"), actor=world.who("cg-clinic"))
    order = await execute(world.rt, CreateOrder(**ORDER), actor=world.who("cg-clinic"))
    assert order["record_class"] is None
    changed = await execute(world.rt, ChangeOrder(order["id"], {"record_class": "inpatient"}), actor=world.who("cg-clinic"))
    assert changed["record_class"] == "inpatient"


async def test_a_studys_retention_follows_its_requests_class_when_the_header_has_none(world):  # noqa: F811
    from services.core.deletion import delete_study
    await world.add_study("1.2.3.61", "chengguan-thc", ["DX"], announce=False)
    doc = await execute(world.rt, RequestReading("1.2.3.61", "imaging", "routine", "咳嗽", record_class="outpatient"),
                        actor=world.who("cg-clinic"))
    with pytest.raises(Refused) as refused:
        await delete_study(world.store, world.rt.blobs, world.rt.consortium.retention, "1.2.3.61",
                           now=_years_after(doc["requested_at"], 14), actor="admin", role="admin", remote=None)
    assert (refused.value.extensions["retention"]["record_class"], refused.value.extensions["retention"]["years"]) == (
        "outpatient", 15)


def test_the_worklist_gives_the_modality_the_orders_requesting_department():
    """The modality copies Requesting Service from the worklist into its images, where the header
    above reads it back (a study without its order still names 申请科室)."""
    from pydicom.dataset import Dataset

    from services.pacs_gateway import worklist
    record = worklist.order_record({
        "patient_name": "张^三", "patient_id": "P1", "accession_number": "YL0001", "study_instance_uid": "2.25.1",
        "requested_procedure_id": "YL0001", "scheduled_date": "20261203", "scheduled_time": "093000",
        "modality": "CT", "scheduled_step_id": "SPS0001", "requesting_physician": "李^医生",
        "requesting_department": "神经内科"})
    asked = Dataset()
    asked.RequestingService, asked.RequestingPhysician = "", ""
    answer = worklist.response(record, asked, "ISO_IR 192")
    assert (answer.RequestingService, str(answer.RequestingPhysician)) == ("神经内科", "李^医生")
