"""A modality simulator on pynetdicom: Modality Performed Procedure Step N-CREATE / N-SET (PS3.4 F),
as a CT sends them around an exam; and DCMTK findscu -W as its worklist query."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

FINDSCU = "/usr/bin/findscu"
DUMP2DCM = "/usr/bin/dump2dcm"
WLISTQRY = Path("/usr/share/doc/dcmtk/examples/wlistqry")


def findscu_worklist(port: int, out: Path, *, calling: str, keys: list[str] = (), query: Path | None = None,
                     called: str = "YILIAN") -> tuple[int, str, list[Dataset]]:
    """DCMTK ``findscu -W`` (Modality Worklist); the responses as data sets, in order."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    cmd = [FINDSCU, "-W", "-v", "-X", "-od", str(out), "-aet", calling, "-aec", called,
           *[a for k in keys for a in ("-k", k)], "127.0.0.1", str(port)]
    if query is not None:
        cmd.append(str(query))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr, [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def query_file(dump: str, out: Path) -> Path:
    """A DCMTK example worklist query (``wlistqry*.dump``) as the DICOM file findscu sends."""
    path = out / (dump.removesuffix(".dump") + ".wl")
    subprocess.run([DUMP2DCM, str(WLISTQRY / dump), str(path)], check=True, capture_output=True, timeout=30)
    return path


class Modality:
    """One MPPS instance reported by ``calling`` to the gateway."""

    def __init__(self, port: int, calling: str, called: str = "YILIAN") -> None:
        self.port, self.calling, self.called = port, calling, called
        self.uid = generate_uid()

    def _associate(self) -> Any:
        ae = AE(ae_title=self.calling)
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate("127.0.0.1", self.port, ae_title=self.called)
        assert assoc.is_established, "MPPS association refused"
        return assoc

    def in_progress(self, item: Dataset, *, patient_name: str, patient_id: str, modality: str,
                    status: str = "IN PROGRESS") -> int:
        """N-CREATE (with status IN PROGRESS, unless a test says otherwise); the DIMSE status."""
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ScheduledStepAttributesSequence = [_scheduled(item)]
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.Modality = modality
        ds.PerformedStationAETitle = self.calling
        ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20261203", "093000"
        ds.PerformedProcedureStepID = "PPS1"
        ds.PerformedProcedureStepStatus = status
        ds.PerformedSeriesSequence = []
        return self._send(lambda a: a.send_n_create(ds, ModalityPerformedProcedureStep, self.uid))

    def finish(self, status: str = "COMPLETED", series_uid: str | None = None) -> int:
        """N-SET with COMPLETED or DISCONTINUED; the DIMSE status."""
        ds = Dataset()
        ds.PerformedProcedureStepStatus = status
        ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "20261203", "094500"
        series = Dataset()
        series.SeriesInstanceUID = series_uid or generate_uid()
        series.ReferencedImageSequence = []
        ds.PerformedSeriesSequence = [series]
        return self._send(lambda a: a.send_n_set(ds, ModalityPerformedProcedureStep, self.uid))

    def _send(self, fn: Any) -> int:
        assoc = self._associate()
        try:
            status, _ = fn(assoc)
            return int(status.Status) if status is not None else -1
        finally:
            assoc.release()


def _scheduled(item: Dataset) -> Dataset:
    """The Scheduled Step Attributes item from a worklist response (what a modality copies)."""
    ds = Dataset()
    ds.AccessionNumber = item.AccessionNumber
    ds.StudyInstanceUID = item.StudyInstanceUID
    ds.RequestedProcedureID = item.get("RequestedProcedureID", "")
    ds.ScheduledProcedureStepID = item.ScheduledProcedureStepSequence[0].get("ScheduledProcedureStepID", "")
    return ds
