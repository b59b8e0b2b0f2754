"""Modality Worklist (DCMTK findscu -W) and MPPS (a pynetdicom modality simulator) on a real gateway,
end to end from an order through the API to the reading request on the centre's worklist."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from pydicom.dataset import Dataset

from services.api.service import ApiService
from services.core.auth import Principal, issue_token
from services.workflow import WorkflowService, queries
from services.workflow.leases import WorkflowSettings
from services.workflow.orders.commands import CreateOrder
from services.workflow.service import execute

from ..dicom_samples import make_instance, storescu, write
from ..gateway.conftest import make_gateway, run  # noqa: F401 - the fixture is used by name
from ..support import wait_for
from .modality import Modality, findscu_worklist, query_file

pytestmark = pytest.mark.dcmtk
SECRET = "test-secret-" + "x" * 32


def clinic(rt, user_id: str = "cg-clinic") -> Principal:
    user = rt.consortium.users[user_id]
    return Principal(user.id, user.role, user.organization, user.centre, "test")


async def order(rt, **kw) -> dict:
    values = dict(patient_id="CG900", patient_name="Zhang^San=张^三", kind="imaging", modality="CT",
                  clinical_question="咳嗽两周", requesting_physician="李^医生", station_ae="CG_CT1",
                  scheduled_at="2026-12-03T09:30:00+08:00", sex="M", birth_date="19600101", procedure_code="CT-CHEST",
                  procedure_description="胸部CT平扫")
    values.update(kw)
    return await execute(rt, CreateOrder(**values), actor=clinic(rt, kw.pop("user", "cg-clinic")))


async def test_worklist_answers_each_modality_its_organisations_items(make_gateway, tmp_path):  # noqa: F811
    gw = await make_gateway()
    ct = await order(gw.rt, resident_id="11010519491231002X")
    await order(gw.rt, modality="DX", station_ae="CG_DR1", scheduled_at="2026-12-04T08:00:00+08:00",
                patient_id="CG901", patient_name="Li^Si=李^四")
    # The query a modality sends (DCMTK's example wlistqry1: every return key, the whole SPS item), UTF-8
    q = query_file("wlistqry1.dump", tmp_path)
    code, out, found = await run(findscu_worklist, gw.port, tmp_path / "r1", calling="CG_CT1", query=q,
                                 keys=["SpecificCharacterSet=ISO_IR 192"])
    assert code == 0, out
    assert [d.AccessionNumber for d in found] == [ct["accession_number"], found[1].AccessionNumber], out
    item = found[0]
    assert item.StudyInstanceUID == ct["study_instance_uid"] and item.RequestedProcedurePriority == "ROUTINE"
    assert str(item.PatientName) == "Zhang^San=张^三" and item.PatientID == "CG900"
    sps = item.ScheduledProcedureStepSequence[0]
    assert (sps.Modality, sps.ScheduledStationAETitle, sps.ScheduledProcedureStepStartDate,
            sps.ScheduledProcedureStepStartTime, sps.ScheduledProcedureStepID) == (
        "CT", "CG_CT1", "20261203", "093000", ct["scheduled_step_id"])
    # The resident ID travels to the modality in Other Patient IDs Sequence, with its issuer
    code, out, found = await run(findscu_worklist, gw.port, tmp_path / "r1c", calling="CG_CT1", keys=[
        "PatientID=CG900", "OtherPatientIDsSequence[0].PatientID", "OtherPatientIDsSequence[0].IssuerOfPatientID"])
    assert code == 0 and len(found) == 1, out
    other = found[0].OtherPatientIDsSequence[0]
    assert (other.PatientID, other.IssuerOfPatientID) == ("11010519491231002X", "CN_RESIDENT_ID")
    # By modality and a date range
    code, out, found = await run(findscu_worklist, gw.port, tmp_path / "r1b", calling="CG_CT1", keys=[
        "PatientName", "AccessionNumber", "ScheduledProcedureStepSequence[0].Modality=CT",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261201-20261203"])
    assert code == 0 and [d.AccessionNumber for d in found] == [ct["accession_number"]], out
    # GB18030 when the modality asks for it; by station AE and by patient name
    code, out, found = await run(findscu_worklist, gw.port, tmp_path / "r2", calling="CG_DR1", keys=[
        "SpecificCharacterSet=GB18030", "PatientName=LI*", "PatientID", "AccessionNumber",
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CG_DR1",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate"])
    assert code == 0, out
    assert [(str(d.PatientName), d.SpecificCharacterSet) for d in found] == [("Li^Si=李^四", "GB18030")]
    assert "李".encode("gb18030") in (tmp_path / "r2").joinpath(sorted(p.name for p in (tmp_path / "r2").iterdir())[0]) \
        .read_bytes()
    # Latin-1 cannot carry 汉字: the answer says UTF-8 and keeps the name whole
    code, out, found = await run(findscu_worklist, gw.port, tmp_path / "r2b", calling="CG_CT1", keys=[
        "SpecificCharacterSet=ISO_IR 100", "PatientName", "ScheduledProcedureStepSequence[0].Modality=CT"])
    assert code == 0 and [(str(d.PatientName), d.SpecificCharacterSet) for d in found] == [
        ("Zhang^San=张^三", "ISO_IR 192")], out
    # Another township's modality sees none of chengguan's items
    code, out, found = await run(findscu_worklist, gw.port, tmp_path / "r3", calling="DB_DR1", query=q)
    assert code == 0 and found == [], out
    # A date range that holds neither
    code, out, found = await run(findscu_worklist, gw.port, tmp_path / "r4", calling="CG_CT1", keys=[
        "PatientName", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261205-"])
    assert code == 0 and found == [], out


async def test_order_to_worklist_mpps_study_and_reading_request_end_to_end(make_gateway, tmp_path):  # noqa: F811
    gw = await make_gateway(study_quiet_seconds=30, jwt_secret=SECRET)  # no quiet period in this test's time
    rt = gw.rt  # the bus as configured by default (no faster polling for the test)
    workflow = WorkflowService(rt, WorkflowSettings(sweep_interval=3600))
    await workflow.start()
    await rt.bus.start()
    api = ApiService(rt)
    await api.start()
    try:
        async with aiohttp.ClientSession() as http:
            token = issue_token(rt.consortium, "cg-clinic", SECRET)
            async with http.post(f"http://127.0.0.1:{api.port}/api/v1/orders", headers={
                    "Authorization": f"Bearer {token}"}, json={
                    "patient_id": "P001", "patient_name": "Zhang^San=张^三", "sex": "M", "birth_date": "19600101",
                    "kind": "imaging", "modality": "CT", "clinical_question": "胸痛3小时", "priority": "urgent",
                    "green_channel": "胸痛", "requesting_physician": "李^医生", "station_ae": "CG_CT1",
                    "scheduled_at": "2026-12-03T09:30:00+08:00"}) as resp:
                assert resp.status == 201, await resp.text()
                created = await resp.json()
        code, out, found = await run(findscu_worklist, gw.port, tmp_path / "wl", calling="CG_CT1", keys=[
            "PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "RequestedProcedureID",
            "ScheduledProcedureStepSequence[0].Modality=CT",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID"])
        assert code == 0 and len(found) == 1, out
        item: Dataset = found[0]
        code, out, others = await run(findscu_worklist, gw.port, tmp_path / "db", calling="DB_DR1",
                                      keys=["PatientName", "AccessionNumber"])
        assert code == 0 and others == [], out

        ct = Modality(gw.port, "CG_CT1")
        assert await run(ct.in_progress, item, patient_name="TEST^PATIENT", patient_id="P001", modality="CT") == 0

        async def state(wanted: str) -> bool:
            return (await rt.store.get("orders", created["id"]))["state"] == wanted
        await wait_for(lambda: state("in_progress"), timeout=5, what="order in progress after MPPS N-CREATE")

        # The study, with the worklist's Accession Number and Study UID; the technician typed another name
        study = make_instance(study_uid=item.StudyInstanceUID, accession_number=item.AccessionNumber,
                              patient_id="P001", patient_name="TEST^PATIENT")
        sent = await run(storescu, gw.port, [write(study, tmp_path / "ct.dcm")], calling="CG_CT1")
        assert sent.returncode == 0, sent.output

        assert await run(ct.finish, "COMPLETED", study.SeriesInstanceUID) == 0
        completed_at = time.monotonic()

        async def on_worklist() -> bool:
            return any(d.get("order_id") == created["id"] for d in await queries.worklist(rt.store,
                                                                                        centre="county-imaging"))
        await wait_for(on_worklist, timeout=5, what="reading request on the centre's worklist")
        elapsed = time.monotonic() - completed_at
        assert elapsed < 1.0, f"{elapsed:.3f} s from MPPS COMPLETED to the worklist"

        done = await rt.store.get("orders", created["id"])
        assert done["state"] == "completed" and done["study_uid"] == item.StudyInstanceUID
        request = await rt.store.get("reading_requests", done["request_id"])
        assert (request["state"], request["source"], request["priority"], request["green_channel"]) == (
            "queued", "order", "urgent", "胸痛")
        assert [m["field"] for m in request["demographic_mismatches"]] == ["patient_name"]
        assert request["patient_name"] == "TEST^PATIENT"  # the study's, kept; the order's is beside it
        assert request["order_patient"]["patient_name"] == "Zhang^San=张^三"
        # The reader sees the flag on his worklist row
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{api.port}/api/v1/worklist", headers={
                    "Authorization": f"Bearer {issue_token(rt.consortium, 'dr-wang', SECRET)}"}) as resp:
                rows = (await resp.json())["items"]
        row = next(r for r in rows if r["id"] == request["id"])
        assert row["demographic_mismatches"] == [
            {"field": "patient_name", "order": "Zhang^San=张^三", "study": "TEST^PATIENT"}]
        # A second N-SET on a finished step is refused and changes nothing
        assert await run(ct.finish, "DISCONTINUED") == 0x0110
        assert (await rt.store.get("orders", created["id"]))["state"] == "completed"
    finally:
        await api.stop()
        await workflow.stop()
        await rt.bus.stop()


async def test_mpps_refusals_name_the_problem_and_change_nothing(make_gateway):  # noqa: F811
    gw = await make_gateway()
    ct = await order(gw.rt)
    item = Dataset()
    item.AccessionNumber, item.StudyInstanceUID, item.RequestedProcedureID = (
        ct["accession_number"], ct["study_instance_uid"], ct["requested_procedure_id"])
    sps = Dataset()
    sps.ScheduledProcedureStepID = ct["scheduled_step_id"]
    item.ScheduledProcedureStepSequence = [sps]
    kw = dict(patient_name="Zhang^San", patient_id="CG900", modality="CT")

    assert await run(Modality(gw.port, "CG_CT1").in_progress, item, status="COMPLETED", **kw) == 0x0106
    assert await run(Modality(gw.port, "COUNTY_RWS1").in_progress, item, **kw) == 0x0110  # a workstation
    assert await run(Modality(gw.port, "CG_CT1").finish) == 0x0112  # never created
    step = Modality(gw.port, "CG_CT1")
    assert await run(step.in_progress, item, **kw) == 0
    assert await run(step.in_progress, item, **kw) == 0x0111  # the same SOP Instance UID again
    intruder = Modality(gw.port, "DB_DR1")
    intruder.uid = step.uid
    assert await run(intruder.finish, "DISCONTINUED") == 0x0112  # another township's: not there
    assert await run(step.finish, "COMPLETED") == 0
    assert await run(step.finish, "DISCONTINUED") == 0x0110  # final
    kept = await gw.rt.store.find("performed_procedure_steps")
    assert [(d["id"], d["status"], d["organization"]) for d in kept] == [(step.uid, "COMPLETED", "chengguan-thc")]
    reported = [e.event.data["status"] for e in await gw.rt.store.read_log(0, types=["procedure_step.reported"])]
    assert reported == ["IN PROGRESS", "COMPLETED"]


def _exam_in_one_association(port: int, order_doc: dict, study: Dataset) -> None:
    """What many modalities do: N-CREATE, the images, N-SET COMPLETED, on one association."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, ModalityPerformedProcedureStep
    ae = AE(ae_title="CG_CT1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="YILIAN")
    assert assoc.is_established
    try:
        uid = study.StudyInstanceUID + ".99"
        create, item = Dataset(), Dataset()
        item.AccessionNumber, item.StudyInstanceUID = order_doc["accession_number"], order_doc["study_instance_uid"]
        item.ScheduledProcedureStepID = order_doc["scheduled_step_id"]
        create.ScheduledStepAttributesSequence = [item]
        create.PerformedProcedureStepStatus, create.Modality = "IN PROGRESS", "CT"
        assert assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)[0].Status == 0
        assert assoc.send_c_store(study).Status == 0
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        assert assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)[0].Status == 0
    finally:
        assoc.release()


async def test_completed_right_after_the_images_finds_them_even_when_indexing_lags(make_gateway):  # noqa: F811
    """A C-STORE is answered once journalled and indexed a little later; on a loaded machine the
    N-SET COMPLETED that follows on the same association used to be handled before the images were
    indexed, and the reading request then waited for the quiet period (30 s) instead of being queued."""
    gw = await make_gateway(study_quiet_seconds=30)
    rt = gw.rt
    indexer = gw.service.ingest.indexer
    index = indexer._index

    async def slow_index(batch):  # the indexer of a busy machine
        await asyncio.sleep(0.5)
        return await index(batch)
    indexer._index = slow_index
    workflow = WorkflowService(rt, WorkflowSettings(sweep_interval=3600))
    await workflow.start()
    await rt.bus.start()
    try:
        ct = await order(rt)
        study = make_instance(study_uid=ct["study_instance_uid"], accession_number=ct["accession_number"],
                              patient_id="CG900", patient_name="Zhang^San")
        await run(_exam_in_one_association, gw.port, ct, study)
        answered = time.monotonic()

        async def queued() -> bool:
            doc = await rt.store.get("orders", ct["id"])
            request = doc.get("request_id") and await rt.store.get("reading_requests", doc["request_id"])
            return bool(request) and request["state"] == "queued"
        await wait_for(queued, timeout=3, what="reading request queued without waiting for the quiet period")
        assert time.monotonic() - answered < 1.0
    finally:
        await workflow.stop()
        await rt.bus.stop()
