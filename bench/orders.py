"""Orders benchmark (issue 15): Modality Worklist C-FIND latency with N scheduled items, and
MPPS COMPLETED -> the reading request on the centre's worklist.

One process: a real gateway (native upper layer, pynetdicom for MWL/MPPS), the workflow service
and the embedded bus on SQLite in a temporary data dir, as ``yilian up`` runs them (default
settings).  N orders (default 10,000) of one township (chengguan-thc, the worst case: its
modalities see them all) are spread over 30 days and its four modality AEs; they are written as
``CreateOrder`` writes them (a template order copied with fresh identifiers, in batches, so
seeding takes seconds).  This process is also the modality (pynetdicom, one association per
query batch):

* **C-FIND**: three queries a modality sends, each repeated: one station's day (≈N/120 items),
  one modality's week (a DA range, ≈N/17 items, as a CT's "next 7 days" query), one Patient ID
  (1 item).  Latency = C-FIND request sent -> final response received, every item included.
* **MPPS COMPLETED -> worklist**: per exam an order (``execute``), N-CREATE IN PROGRESS, one
  C-STORE with its Accession Number and Study UID, N-SET COMPLETED; latency = N-SET response
  received -> the reading request seen ``queued`` on county-imaging (the store polled every 2 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from services.core.auth import Principal
from services.core.runtime import build_runtime
from services.core.settings import Settings
from services.pacs_gateway import GatewayService
from services.workflow import WorkflowService
from services.workflow.orders.commands import CreateOrder
from services.workflow.service import execute

ROOT = Path(__file__).resolve().parents[1]
STATIONS = ("CG_DR1", "CG_US1", "CG_CT1", "CG_ECG1")
MODALITY = {"CG_DR1": "DX", "CG_US1": "US", "CG_CT1": "CT", "CG_ECG1": "ECG"}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def row(name: str, values: list[float], matches: int) -> str:
    ms = [v * 1000 for v in values]
    return (f"| {name} | {matches} | {len(ms)} | {statistics.median(ms):.1f} ms | {pct(ms, 0.9):.1f} ms | "
            f"{pct(ms, 0.99):.1f} ms | {max(ms):.1f} ms |")


async def seed(rt, actor: Principal, n: int, start: datetime) -> dict:
    template = await execute(rt, CreateOrder(patient_id="T0", patient_name="Zhang^San=张^三", kind="imaging",
                                             modality="CT", clinical_question="咳嗽", requesting_physician="李^医生",
                                             scheduled_at=start.isoformat(), station_ae="CG_CT1"), actor=actor)
    local = rt.local_time
    batch = 1000
    for first in range(1, n, batch):
        async with rt.store.transaction() as tx:
            for i in range(first, min(n, first + batch)):
                station = STATIONS[i % 4]
                when = start + timedelta(days=(i // 4) % 30, minutes=(i * 7) % 600)
                d = local.dicom(when)
                acc = "YL" + uuid.uuid4().hex[:12].upper()
                await tx.insert("orders", {**template, "id": f"ord-{uuid.uuid4().hex[:20]}", "patient_id": f"T{i}",
                                           "accession_number": acc, "requested_procedure_id": acc,
                                           "scheduled_step_id": "SPS" + acc[2:],
                                           "study_instance_uid": f"2.25.{uuid.uuid4().int}", "station_ae": station,
                                           "modality": MODALITY[station], "scheduled_at": when.isoformat(),
                                           "scheduled_date": d.date, "scheduled_time": d.time.split(".")[0]})
    return template


def cfind(port: int, calling: str, query: Dataset, reps: int) -> tuple[list[float], int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="YILIAN")
    assert assoc.is_established
    times, matches = [], 0
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            matches = sum(1 for status, ds in assoc.send_c_find(query, ModalityWorklistInformationFind)
                          if status is not None and status.Status == 0xFF00)
            times.append(time.perf_counter() - t0)
    finally:
        assoc.release()
    return times, matches


def worklist_query(**keys: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for k in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "RequestedProcedureID"):
        setattr(ds, k, keys.get(k, ""))
    sps = Dataset()
    for k in ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
              "Modality", "ScheduledProcedureStepID", "ScheduledProcedureStepDescription"):
        setattr(sps, k, keys.get(k, ""))
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def exam(port: int, order: dict) -> float:
    """N-CREATE, one C-STORE, N-SET COMPLETED; the time the N-SET answer came (perf_counter)."""
    ae = AE(ae_title="CG_CT1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="YILIAN")
    assert assoc.is_established
    uid = generate_uid()
    try:
        create = Dataset()
        item = Dataset()
        item.AccessionNumber, item.StudyInstanceUID = order["accession_number"], order["study_instance_uid"]
        item.ScheduledProcedureStepID = order["scheduled_step_id"]
        create.ScheduledStepAttributesSequence = [item]
        create.PerformedProcedureStepStatus, create.Modality = "IN PROGRESS", "CT"
        status, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0, status
        status = assoc.send_c_store(image(order))
        assert status.Status == 0, status
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0, status
        return time.perf_counter()
    finally:
        assoc.release()


def image(order: dict) -> Dataset:
    from tests.dicom_samples import make_instance
    return make_instance(study_uid=order["study_instance_uid"], accession_number=order["accession_number"],
                         patient_id=order["patient_id"], patient_name="Zhang^San")


async def run(n: int, reps: int, exams: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = Settings(data_dir=data, consortium_path=ROOT / "deploy" / "consortium.example.yaml",
                            store_url=f"sqlite:///{data / 'yilian.db'}", bus_url="embedded:",
                            blob_url=f"file://{data / 'blobs'}", bind_host="127.0.0.1", dicom_port=0,
                            ae_title="YILIAN", study_quiet_seconds=30.0)
        rt = await build_runtime(settings)
        gateway, workflow = GatewayService(rt), WorkflowService(rt)
        await gateway.start()
        await workflow.start()
        await rt.bus.start()
        user = rt.consortium.users["cg-clinic"]
        actor = Principal(user.id, user.role, user.organization, user.centre, "bench")
        start = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
        t0 = time.perf_counter()
        await seed(rt, actor, n, start)
        print(f"seeded {n} orders in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        port = gateway.dicom_port
        print(f"| query ({n} scheduled items) | matches | runs | p50 | p90 | p99 | max |")
        print("|---|---|---|---|---|---|---|")
        for name, calling, q in (
                ("one station's day", "CG_CT1", worklist_query(ScheduledStationAETitle="CG_CT1",
                                                               ScheduledProcedureStepStartDate="20261210")),
                ("one modality's week (DA range)", "CG_CT1", worklist_query(
                    Modality="CT", ScheduledProcedureStepStartDate="20261210-20261216")),
                ("one Patient ID", "CG_CT1", worklist_query(PatientID="T4242"))):
            times, matches = await asyncio.to_thread(cfind, port, calling, q, reps)
            print(row(name, times, matches))
        latencies = []
        for i in range(exams):
            order = await execute(rt, CreateOrder(
                patient_id=f"E{i}", patient_name="Zhang^San=张^三", kind="imaging", modality="CT",
                clinical_question="咳嗽", requesting_physician="李^医生", scheduled_at=start.isoformat(),
                station_ae="CG_CT1"), actor=actor)
            answered = await asyncio.to_thread(exam, port, order)
            rid = None
            while True:
                doc = await rt.store.get("orders", order["id"])
                rid = doc.get("request_id")
                request = await rt.store.get("reading_requests", rid) if rid else None
                if request is not None and request["state"] == "queued":
                    latencies.append(time.perf_counter() - answered)
                    break
                if time.perf_counter() - answered > 10:
                    raise SystemExit(f"exam {i}: no queued request after 10 s")
                await asyncio.sleep(0.002)
        print(f"\n| MPPS COMPLETED -> queued | runs | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|")
        print(row("N-SET answered -> request queued", latencies, 0).replace("| 0 |", "|", 1))
        await rt.bus.stop()
        await workflow.stop()
        await gateway.stop()
        await rt.blobs.close()
        await rt.store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench orders", description=__doc__)
    p.add_argument("--orders", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--exams", type=int, default=100)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.orders, args.reps, args.exams = 1000, 5, 5
    asyncio.run(run(args.orders, args.reps, args.exams))
    return 0


if __name__ == "__main__":
    sys.exit(main())
