"""End to end on the embedded default: DCMTK storescu sends a village ECG and a township CT to a
real gateway; a site rule and an explicit request put them on the right centres' worklists."""

from __future__ import annotations

import pytest
from pydicom import dcmread

from services.core.auth import Principal
from services.workflow import WorkflowService, queries
from services.workflow.commands import Claim, RequestReading, Sign
from services.workflow.leases import WorkflowSettings
from services.workflow.service import execute, site_rule_request_id

from ..dicom_samples import real_file, storescu
from ..gateway.conftest import make_gateway, run  # noqa: F401 - the fixture is used by name
from ..support import wait_for

pytestmark = pytest.mark.dcmtk


def principal(rt, user_id: str) -> Principal:
    user = rt.consortium.users[user_id]
    return Principal(user.id, user.role, user.organization, user.centre, "test")


async def test_storescu_studies_reach_the_right_worklists(make_gateway):  # noqa: F811
    gw = await make_gateway(study_quiet_seconds=0.3)
    rt = gw.rt
    rt.bus.poll_interval = 0.05
    workflow = WorkflowService(rt, WorkflowSettings(lease_seconds=60, sweep_interval=3600))
    await workflow.start()
    await rt.bus.start()
    try:
        ecg, ct = real_file("waveform_ecg.dcm"), real_file("CT_small.dcm")
        ecg_uid, ct_uid = dcmread(ecg).StudyInstanceUID, dcmread(ct).StudyInstanceUID
        # The township asks before its CT has arrived: the request waits.
        asked = await execute(rt, RequestReading(ct_uid, "imaging", "urgent", "头痛伴呕吐，排除脑出血",
                                                 green_channel="卒中"), actor=principal(rt, "cg-clinic"))
        assert asked["state"] == "requested"

        sent_ecg = await run(storescu, gw.port, [ecg], calling="ZZ_ECG1")  # 张庄村卫生室: site rule for ECG
        sent_ct = await run(storescu, gw.port, [ct], calling="CG_CT1")  # 城关镇卫生院
        assert sent_ecg.returncode == 0, sent_ecg.output
        assert sent_ct.returncode == 0, sent_ct.output

        auto_id = site_rule_request_id(ecg_uid, "ecg")

        async def both_queued() -> bool:
            docs = [await queries.get_request(rt.store, rid) for rid in (auto_id, asked["id"])]
            return all(d is not None and d["state"] == "queued" for d in docs)
        await wait_for(both_queued, timeout=20, what="both requests queued after study.received")

        ecg_list = await queries.worklist(rt.store, centre="county-ecg")
        assert [(d["id"], d["organization"], d["modality"], d["source"]) for d in ecg_list] == \
            [(auto_id, "zhangzhuang-vc", "ECG", "site_rule")]
        ct_list = await queries.worklist(rt.store, centre="county-imaging")
        assert [(d["id"], d["organization"], d["modality"]) for d in ct_list] == \
            [(asked["id"], "chengguan-thc", "CT")]
        assert ct_list[0]["patient_id"] == dcmread(ct).PatientID
        assert await queries.worklist(rt.store, centre="city-imaging") == []

        # A county reader reads the CT and signs a critical finding.
        wang = principal(rt, "dr-wang")
        await execute(rt, Claim(asked["id"]), actor=wang)
        signed = await execute(rt, Sign(asked["id"], "右侧基底节区高密度影", "考虑脑出血", critical=True,
                                        critical_category="脑出血"), actor=wang)
        assert signed["state"] == "signed"
        types = [e.event.type for e in await rt.store.read_log(0, limit=10_000) if e.event.subject == asked["id"]]
        assert types == ["reading.requested", "reading.queued", "reading.claimed", "report.signed"]
        received = [e.event for e in await rt.store.read_log(0, limit=10_000, types=["study.received"])]
        assert {e.data["study_uid"] for e in received} == {ecg_uid, ct_uid}
    finally:
        await workflow.stop()
        await rt.bus.stop()
