"""The modules every result object shares: Patient, General Study, SOP Common (PS3.3).

Copied from the study index (the gateway's ``studies`` document), so the clinic's terminal
files the SR and the PDF under the original study.  I/O free.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from ..core.localtime import LocalTime

Doc = dict[str, Any]

CHARSET = "ISO_IR 192"  # UTF-8: Chinese names and text round-trip


def base_dataset(*, sop_class_uid: str, sop_instance_uid: str, study: Doc, result: Doc, created: str,
                 station: str, local: LocalTime) -> Dataset:
    """Every date and time the result objects write is in ``local`` time, with its offset in
    Timezone Offset From UTC (0008,0201, SOP Common), so a clinic's PACS shows local times."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = CHARSET
    when = local.dicom(created)
    ds.InstanceCreationDate, ds.InstanceCreationTime = when.date, when.time
    ds.TimezoneOffsetFromUTC = when.offset
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, sop_instance_uid
    # Patient (C.7.1.1): from the index, falling back to what the report carried.
    ds.PatientName = study.get("patient_name") or result.get("patient_name") or ""
    ds.PatientID = study.get("patient_id") or result.get("patient_id") or ""
    ds.PatientBirthDate = study.get("birth_date") or ""
    ds.PatientSex = study.get("sex") or ""
    # General Study (C.7.2.1): the original study, so the result files beside the images.
    ds.StudyInstanceUID = result["study_uid"]
    ds.StudyDate = study.get("study_date") or ""
    ds.StudyTime = study.get("study_time") or ""
    ds.AccessionNumber = study.get("accession_number") or result.get("accession_number") or ""
    ds.ReferringPhysicianName = study.get("referring_physician") or ""
    ds.StudyID = study.get("study_id") or ""
    if study.get("study_description"):
        ds.StudyDescription = study["study_description"]
    # General Equipment (C.7.5.1)
    ds.Manufacturer = "Yilian"
    ds.StationName = station[:16]
    return ds
