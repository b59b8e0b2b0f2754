"""The DICOM information model as the gateway indexes it (docs/data-model.md), free of I/O.

:func:`header_of` turns a parsed header into an :class:`InstanceHeader` (text decoded
with the dataset's Specific Character Set), :func:`check` says whether an instance may
be kept, and the ``*_doc`` functions give the index documents an instance creates or
updates.  The ingest module does the I/O around them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from ..core import identity
from . import statuses

UID_FIELDS = {"SOPClassUID": "SOP Class UID", "SOPInstanceUID": "SOP Instance UID",
              "StudyInstanceUID": "Study Instance UID", "SeriesInstanceUID": "Series Instance UID"}


class StoreRefused(Exception):
    """The instance cannot be kept: a DIMSE status and its Error Comment."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]  # Error Comment is LO: 64 characters


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """What the index keeps of one instance's header; text is decoded Unicode."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    body_part: str = ""
    series_date: str = ""
    series_time: str = ""
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None
    specific_character_set: str = ""
    # The consortium identity (``ISSUER|VALUE``, services.core.identity) of Other Patient IDs
    # Sequence (0010,1002) or of Patient ID with its Issuer (0010,0021); "" if none is valid.
    national_id: str = ""
    operators_name: str = ""  # Operators' Name (0008,1070), several joined by "\\"


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def identifiers(ds: Dataset) -> list[tuple[str, str]]:
    """(Issuer of Patient ID, Patient ID) of the patient: the top level's, then Other Patient IDs Sequence's."""
    pairs = [(_text(ds, "IssuerOfPatientID"), _text(ds, "PatientID"))]
    for item in ds.get("OtherPatientIDsSequence") or ():
        pairs.append((_text(item, "IssuerOfPatientID"), _text(item, "PatientID")))
    return pairs


def header_of(ds: Dataset) -> InstanceHeader:
    """Read the indexed attributes; raise :class:`StoreRefused` if the UIDs are unusable."""
    uids = {}
    for keyword, name in UID_FIELDS.items():
        raw = ds.get(keyword)
        value = str(raw).strip() if raw is not None else ""
        if not value:
            raise StoreRefused(statuses.CANNOT_UNDERSTAND_BAD_UID, f"{name} missing")
        if not UID(value).is_valid:
            raise StoreRefused(statuses.CANNOT_UNDERSTAND_BAD_UID, f"{name} is not a valid UID")
        uids[keyword] = value
    charset = ds.get("SpecificCharacterSet", "")
    return InstanceHeader(
        sop_class_uid=uids["SOPClassUID"], sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"], series_uid=uids["SeriesInstanceUID"],
        patient_id=_text(ds, "PatientID"), patient_name=_text(ds, "PatientName"),
        birth_date=_text(ds, "PatientBirthDate"), sex=_text(ds, "PatientSex"),
        study_date=_text(ds, "StudyDate"), study_time=_text(ds, "StudyTime"),
        accession_number=_text(ds, "AccessionNumber"), study_id=_text(ds, "StudyID"),
        study_description=_text(ds, "StudyDescription"), referring_physician=_text(ds, "ReferringPhysicianName"),
        modality=_text(ds, "Modality"), series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"), body_part=_text(ds, "BodyPartExamined"),
        series_date=_text(ds, "SeriesDate"), series_time=_text(ds, "SeriesTime"),
        instance_number=_int(ds, "InstanceNumber"), rows=_int(ds, "Rows"), columns=_int(ds, "Columns"),
        number_of_frames=_int(ds, "NumberOfFrames"), national_id=identity.first_key(identifiers(ds)),
        operators_name=_text(ds, "OperatorsName"),
        specific_character_set="\\".join(charset) if isinstance(charset, (list, tuple)) or
        type(charset).__name__ == "MultiValue" else str(charset),
    )


def check(header: InstanceHeader, *, requested_sop_class: str, requested_sop_instance: str, size: int,
          max_size: int) -> None:
    """Raise :class:`StoreRefused` unless the instance agrees with its C-STORE request and fits."""
    if header.sop_instance_uid != requested_sop_instance:
        raise StoreRefused(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                           "SOP Instance UID differs from the C-STORE request")
    if header.sop_class_uid != requested_sop_class:
        raise StoreRefused(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                           "SOP Class UID differs from the C-STORE request")
    if size > max_size:
        raise StoreRefused(statuses.OUT_OF_RESOURCES, f"instance of {size} bytes exceeds limit {max_size}")


FOREIGN_STUDY = "study belongs to another organisation"


def check_owner(owner: str | None, organization: str) -> None:
    """A study belongs to the organisation that first sent it (``owner``; ``None``: a new study).
    Raise :class:`StoreRefused` for an instance of another organisation: one clinic's images
    never join another clinic's patient, whatever the UIDs say."""
    if owner is not None and owner != organization:
        raise StoreRefused(statuses.NOT_AUTHORIZED, FOREIGN_STUDY)


def name_key(name: str) -> str:
    """Person names match case-insensitively (PS3.4 C.2.2.2.1 leaves it to the SCP; we fold case)."""
    return name.upper()


def blob_key(header: InstanceHeader, sha256: str) -> str:
    # The content hash in the key: a different copy of the same instance never overwrites
    # the file the index points at, so index and blob agree even mid-replace.
    return f"{header.study_uid}/{header.series_uid}/{header.sop_instance_uid}.{sha256[:16]}.dcm"


def instance_doc(header: InstanceHeader, *, organization: str, calling_ae: str, transfer_syntax_uid: str,
                 key: str, size: int, sha256: str, now: str) -> dict[str, Any]:
    return {
        "id": header.sop_instance_uid, "study_uid": header.study_uid, "series_uid": header.series_uid,
        "organization": organization, "sop_class_uid": header.sop_class_uid,
        "transfer_syntax_uid": transfer_syntax_uid, "instance_number": header.instance_number,
        "blob_key": key, "size": size, "sha256": sha256, "received_at": now, "calling_ae": calling_ae,
        "rows": header.rows, "columns": header.columns, "number_of_frames": header.number_of_frames,
    }


def series_doc(current: dict[str, Any] | None, header: InstanceHeader, *, organization: str,
               added: int) -> dict[str, Any]:
    """The series after ``added`` (0 or 1) new instances; header fields fill what is missing."""
    doc = dict(current or {"id": header.series_uid, "study_uid": header.study_uid, "organization": organization,
                           "instance_count": 0})
    for field, value in (("modality", header.modality), ("series_number", header.series_number),
                         ("series_description", header.series_description), ("body_part", header.body_part),
                         ("series_date", header.series_date), ("series_time", header.series_time)):
        if doc.get(field) in (None, ""):
            doc[field] = value
    doc["instance_count"] = doc.get("instance_count", 0) + added
    return doc


def study_doc(current: dict[str, Any] | None, header: InstanceHeader, *, organization: str, added: int,
              new_series: bool, now: str) -> dict[str, Any]:
    """The study after an instance arrived: re-opened (``receiving``) with fresh ``last_update_at``."""
    doc = dict(current or {"id": header.study_uid, "organization": organization, "modalities": [],
                           "series_count": 0, "instance_count": 0, "revision": 0, "first_received_at": now})
    for field, value in (("patient_id", header.patient_id), ("patient_name", header.patient_name),
                         ("patient_name_key", name_key(header.patient_name)), ("birth_date", header.birth_date),
                         ("sex", header.sex), ("study_date", header.study_date), ("study_time", header.study_time),
                         ("accession_number", header.accession_number), ("study_id", header.study_id),
                         ("study_description", header.study_description),
                         ("referring_physician", header.referring_physician),
                         ("specific_character_set", header.specific_character_set),
                         ("identity", header.national_id)):
        if doc.get(field) in (None, ""):
            doc[field] = value
    if header.modality and header.modality not in doc["modalities"]:
        doc["modalities"] = sorted([*doc["modalities"], header.modality])
    # Every technician who sent part of the study: image quality is rated per technician
    operators = [o for o in header.operators_name.split("\\") if o]
    if operators and not set(operators) <= set(doc.get("operators") or ()):
        doc["operators"] = sorted({*(doc.get("operators") or ()), *operators})
    doc["series_count"] += 1 if new_series else 0
    doc["instance_count"] += added
    doc["state"] = "receiving"
    doc["last_update_at"] = now
    return doc


def patient_id_of(organization: str, patient_id: str) -> str:
    return f"{organization}|{patient_id}"


def patient_doc(current: dict[str, Any] | None, header: InstanceHeader, *, organization: str,
                new_study: bool) -> dict[str, Any]:
    doc = dict(current or {"id": patient_id_of(organization, header.patient_id), "organization": organization,
                           "patient_id": header.patient_id, "study_count": 0})
    for field, value in (("patient_name", header.patient_name), ("patient_name_key", name_key(header.patient_name)),
                         ("birth_date", header.birth_date), ("sex", header.sex), ("identity", header.national_id)):
        if doc.get(field) in (None, ""):
            doc[field] = value
    doc["study_count"] += 1 if new_study else 0
    return doc


def stored_event_data(header: InstanceHeader, instance: dict[str, Any], *, replaced: bool) -> dict[str, Any]:
    data = {
        "study_uid": header.study_uid, "series_uid": header.series_uid,
        "sop_instance_uid": header.sop_instance_uid, "sop_class_uid": header.sop_class_uid,
        "transfer_syntax_uid": instance["transfer_syntax_uid"], "modality": header.modality,
        "organization": instance["organization"], "calling_ae": instance["calling_ae"], "size": instance["size"],
        "patient_id": header.patient_id, "replaced": replaced,
    }
    return data


def received_event_data(study: dict[str, Any]) -> dict[str, Any]:
    """``study.received``: the whole study's counts, as of the revision being announced."""
    return {
        "study_uid": study["id"], "organization": study["organization"], "patient_id": study.get("patient_id", ""),
        "series_count": study["series_count"], "instance_count": study["instance_count"],
        "modalities": study.get("modalities", []), "revision": study["revision"],
        "accession_number": study.get("accession_number", ""), "study_date": study.get("study_date", ""),
    }
