"""The edge keeps a copy of its organisation's worklist: orders made at the centre through the API
reach it (never another clinic's), a cancelled one leaves it, DCMTK ``findscu -W`` at the edge
answers from it through an outage and a restart, a study of a stat order goes first, and an MPPS
COMPLETED reported at the edge during the outage completes the order at the centre once the link
is back."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from services.edge import outbox
from services.workflow import WorkflowService
from services.workflow.leases import WorkflowSettings
from tests import dicom_samples as ds_
from tests.orders.modality import Modality, findscu_worklist
from tests.support import wait_for

from .conftest import EDGE_AE

pytestmark = pytest.mark.dcmtk
KEYS = ["AccessionNumber", "StudyInstanceUID", "RequestedProcedureID", "PatientName", "PatientID",
        "RequestedProcedurePriority", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
        "ScheduledProcedureStepSequence[0].Modality", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle"]


async def create_order(centre, user: str, **kw) -> dict:
    body = {"patient_id": "CG900", "patient_name": "Zhang^San=张^三", "kind": "imaging", "modality": "CT",
            "clinical_question": "胸痛两小时", "requesting_physician": "李^医生",
            "scheduled_at": "2026-12-03T09:30:00+08:00", **kw}
    async with centre.session.post(f"{centre.base}/api/v1/orders", json=body,
                                   headers={"Authorization": f"Bearer {centre.token(user)}"}) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


def worklist(edge, tmp: Path, name: str, calling: str = "CG_CT1") -> list:
    code, out, found = findscu_worklist(edge.dicom_port, tmp / name, calling=calling, called=EDGE_AE, keys=KEYS)
    assert code == 0, out
    return found


async def http_get(edge, path: str) -> str:
    """The edge's own HTTP status (as ``yilian edge status`` asks it)."""
    return await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{edge.service.port}{path}",
                                                                  timeout=10).read().decode())


async def status(edge) -> dict:
    return json.loads(await http_get(edge, "/status"))["worklist"]


def storescu(port: int, files: list[Path]) -> None:
    out = subprocess.run([ds_.STORESCU, "-aet", "CG_CT1", "-aec", EDGE_AE, "127.0.0.1", str(port), *map(str, files)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


async def test_worklist_copy_answers_modalities_through_an_outage(centre, link_to, make_edge, tmp_path):
    workflow = WorkflowService(centre.rt, WorkflowSettings(sweep_interval=3600))
    await workflow.start()
    await centre.rt.bus.start()
    try:
        await walk(centre, link_to, make_edge, tmp_path)
    finally:
        await workflow.stop()
        await centre.rt.bus.stop()


async def walk(centre, link_to, make_edge, tmp_path):
    store = centre.rt.store
    stat = await create_order(centre, "cg-clinic", priority="stat", station_ae="CG_CT1",
                              resident_id="11010519491231002X")
    dx = await create_order(centre, "cg-clinic", modality="DX", station_ae="CG_DR1", patient_id="CG901",
                            patient_name="Li^Si=李^四", scheduled_at="2026-12-03T10:00:00+08:00")
    dropped = await create_order(centre, "cg-clinic", patient_id="CG902", patient_name="Wang^Wu")
    other = await create_order(centre, "db-clinic", modality="DX", station_ae="DB_DR1", patient_id="DB1",
                               patient_name="Zhao^Liu")
    proxy = await link_to()
    edge = await make_edge(proxy, worklist_seconds=0.2)

    async def copy_is(ids: set[str]) -> bool:
        return {d["id"] for d in await edge.rt.store.find("orders")} == ids
    await wait_for(lambda: copy_is({stat["id"], dx["id"], dropped["id"]}), timeout=15, what="the worklist copy")
    assert await edge.rt.store.get("orders", other["id"]) is None, "another clinic's order never reaches the edge"
    # The centre audits the edge's reads of its patients' orders
    reads = await store.find("audit", {"action": "edge.worklist"})
    assert reads and all(r["actor"] == "cg-edge" and r["organization"] == "chengguan-thc" for r in reads)

    # Cancelled at the centre: it leaves the copy (an incremental sync)
    async with centre.session.post(f"{centre.base}/api/v1/orders/{dropped['id']}/cancel", json={"reason": "患者未到"},
                                   headers={"Authorization": f"Bearer {centre.token('cg-clinic')}"}) as resp:
        assert resp.status == 200, await resp.text()
    await wait_for(lambda: copy_is({stat["id"], dx["id"]}), timeout=15, what="the cancelled order gone")
    async with centre.session.get(f"{centre.base}/api/v1/edge/worklist", params={"since": "2026-01-01T00:00:00Z"},
                                  headers={"Authorization": f"Bearer {centre.token('cg-edge')}"}) as resp:
        answer = await resp.json()
    assert {i["organization"] for i in answer["items"]} == {"chengguan-thc"}
    cancelled = next(i for i in answer["items"] if i["id"] == dropped["id"])
    assert cancelled["state"] == "cancelled" and "patient_name" not in cancelled, "a closed order: its id, no patient"

    # The link goes down; the modality queries the edge as usual, even after the edge restarts
    proxy.outage(True)

    async def failing() -> bool:
        return (await status(edge))["last_error"] is not None
    await wait_for(failing, timeout=15, what="a failed sync")
    await edge.stop()
    edge = await make_edge(proxy, worklist_seconds=0.2)
    found = await asyncio.to_thread(worklist, edge, tmp_path, "down")
    assert sorted(d.AccessionNumber for d in found) == sorted([stat["accession_number"], dx["accession_number"]])
    item = next(d for d in found if d.AccessionNumber == dx["accession_number"])
    assert item.StudyInstanceUID == dx["study_instance_uid"] and str(item.PatientName) == "Li^Si=李^四"
    assert next(d for d in found if d.AccessionNumber == stat["accession_number"]).RequestedProcedurePriority == "STAT"
    worklist_status = await status(edge)
    assert worklist_status["items"] == 2 and worklist_status["age_seconds"] > 0 and worklist_status["synced_at"]

    # The DX is done during the outage: MPPS at the edge; it leaves the local worklist at once
    modality = Modality(edge.dicom_port, "CG_DR1", called=EDGE_AE)
    assert await asyncio.to_thread(modality.in_progress, item, patient_name="Li^Si", patient_id="CG901",
                                   modality="DX") == 0
    assert await asyncio.to_thread(modality.finish, "COMPLETED") == 0

    async def steps_pending() -> bool:
        return (await status(edge))["steps_pending"] == 1
    await wait_for(steps_pending, timeout=10, what="the MPPS queued at the edge")
    assert [d.AccessionNumber for d in await asyncio.to_thread(worklist, edge, tmp_path, "after")] == \
        [stat["accession_number"]]
    # A study of the stat order (the worklist's Study Instance UID, no Accession Number) goes first
    routine_uid = generate_uid()
    (tmp_path / "src").mkdir()
    files = [ds_.write(ds_.make_instance(study_uid=uid, accession_number="", modality="CT", patient_id=pid),
                       tmp_path / "src" / f"{n}.dcm")
             for n, (uid, pid) in enumerate(((routine_uid, "CG950"), (stat["study_instance_uid"], "CG900")))]
    await asyncio.to_thread(storescu, edge.dicom_port, files)

    async def queued() -> bool:
        return await edge.rt.store.count(outbox.EDGE_STUDIES) == 2
    await wait_for(queued, timeout=10, what="both studies in the forward queue")
    assert (await edge.rt.store.get(outbox.EDGE_STUDIES, stat["study_instance_uid"]))["rank"] == outbox.URGENT
    assert (await edge.rt.store.get(outbox.EDGE_STUDIES, routine_uid))["rank"] == outbox.ROUTINE
    metrics = await http_get(edge, "/metrics")
    assert "yilian_edge_worklist_items 1" in metrics and "yilian_edge_worklist_sync_failing 1" in metrics
    assert "yilian_edge_procedure_steps_pending 1" in metrics
    assert (await store.get("orders", dx["id"]))["state"] == "scheduled", "the centre has not heard yet"

    # The link is back: the centre learns the MPPS once and completes the order; the copy follows
    proxy.outage(False)

    async def completed_at_centre() -> bool:
        return (await store.get("orders", dx["id"]))["state"] == "completed"
    await wait_for(completed_at_centre, timeout=20, what="the DX order completed at the centre")
    step = await store.get("performed_procedure_steps", modality.uid)
    assert step["status"] == "COMPLETED" and step["organization"] == "chengguan-thc" and step["via_edge"]
    assert [s["sop_instance_uid"] for s in (await store.get("orders", dx["id"]))["performed_steps"]] == [modality.uid]
    await wait_for(lambda: copy_is({stat["id"]}), timeout=15, what="the completed order gone from the copy")

    async def synced() -> bool:
        s = await status(edge)
        return s["last_error"] is None and s["steps_pending"] == 0
    await wait_for(synced, timeout=15, what="the edge's worklist status clear")
    reported = [e for e in await centre.events("procedure_step.reported") if e["subject"] == modality.uid]
    assert [e["data"]["status"] for e in reported] == ["COMPLETED"], "forwarded once, its latest status"
