"""The SR of a result: findings, impression, 危急值, reader, time; a Basic Text SR (PS3.3 A.35.1),
or an Enhanced SR (A.35.2) when the report's template fields include numbers (NUM items with UCUM
units: 心率 75 /min, 心胸比 0.45).  Template fields are coded items inside Findings, each named by
its template key in the private scheme ``99YILIAN`` with the field's label as Code Meaning.

Same Study Instance UID as the original study, a new series, the original study's series
and instances in the Current Requested Procedure Evidence Sequence, and — for an
addendum — the corrected report's SR in the Predecessor Documents Sequence.  I/O free.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from ..core.localtime import LocalTime
from .document import base_dataset
from .model import uid_for

Doc = dict[str, Any]

BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
ENHANCED_SR = UID("1.2.840.10008.5.1.4.1.1.88.22")
FIELD_SCHEME = "99YILIAN"
# Template units as UCUM (PS3.16 CID 7181 uses UCUM); a unit not listed keeps its text, privately coded.
UCUM = {None: "1", "": "1", "次/分": "/min", "bpm": "/min", "°": "deg", "ms": "ms", "mm": "mm", "cm": "cm",
        "ml": "mL", "mL": "mL", "%": "%", "s": "s"}
SERIES_NUMBER = 9901  # results sort after the clinic's own series

# Document titles (LOINC), by result kind.
TITLES = {"imaging": ("18748-4", "LN", "Diagnostic Imaging Report"),
          "ecg": ("11524-6", "LN", "EKG study"),
          "consultation": ("11488-4", "LN", "Consult note")}
FINDINGS = ("121070", "DCM", "Findings")
FINDING = ("121071", "DCM", "Finding")
IMPRESSIONS = ("121072", "DCM", "Impressions")
IMPRESSION = ("121073", "DCM", "Impression")
OBSERVER_TYPE = ("121005", "DCM", "Observer Type")
PERSON = ("121006", "DCM", "Person")
PERSON_NAME = ("121008", "DCM", "Person Observer Name")
PERSON_ORGANIZATION = ("121009", "DCM", "Person Observer's Organization Name")
# No standard code says "critical finding (危急值)" yet; a private scheme, values from CID 230 (Yes-No).
CRITICAL = ("CRITICAL", "99YILIAN", "Critical finding")
CRITICAL_CATEGORY = ("CRIT_CATEGORY", "99YILIAN", "Critical finding category")
SIGNED_AT = ("SIGNED_AT", "99YILIAN", "Report signed")
# The signed PDF of the same report version: either document leads to the other (docs/reports.md).
REPORT_ID = ("REPORT_ID", "99YILIAN", "Report identifier")
REPORT_VERSION = ("REPORT_VERSION", "99YILIAN", "Report version")
SIGNED_PDF = ("SIGNED_PDF", "99YILIAN", "Signed report PDF")
PDF_SHA256 = ("PDF_SHA256", "99YILIAN", "SHA-256 of the signed report PDF")
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
YES, NO = ("373066001", "SCT", "Yes"), ("373067005", "SCT", "No")


def code(value: tuple[str, str, str]) -> Dataset:
    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = value
    return ds


def _item(value_type: str, relationship: str | None, name: tuple[str, str, str]) -> Dataset:
    ds = Dataset()
    if relationship:
        ds.RelationshipType = relationship
    ds.ValueType = value_type
    ds.ConceptNameCodeSequence = Sequence([code(name)])
    return ds


def text(relationship: str, name: tuple[str, str, str], value: str) -> Dataset:
    ds = _item("TEXT", relationship, name)
    ds.TextValue = value
    return ds


def container(relationship: str, name: tuple[str, str, str], children: list[Dataset]) -> Dataset:
    ds = _item("CONTAINER", relationship, name)
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = Sequence(children)
    return ds


def _references(study_uid: str, series: Iterable[tuple[str, list[tuple[str, str]]]]) -> Dataset:
    """A Hierarchical SOP Instance Reference Macro item (PS3.3 C.17.2.1)."""
    study = Dataset()
    study.StudyInstanceUID = study_uid
    items = []
    for series_uid, instances in series:
        s = Dataset()
        s.SeriesInstanceUID = series_uid
        refs = []
        for sop_class, sop_instance in instances:
            r = Dataset()
            r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID = sop_class, sop_instance
            refs.append(r)
        s.ReferencedSOPSequence = Sequence(refs)
        items.append(s)
    study.ReferencedSeriesSequence = Sequence(items)
    return study


def _person_observers(observers: list[tuple[str, str]]) -> list[Dataset]:
    """Observation context (TID 1002/1003): Observer Type, name and organisation, per person."""
    items = []
    for name, organization in observers:
        observer_type = _item("CODE", "HAS OBS CONTEXT", OBSERVER_TYPE)
        observer_type.ConceptCodeSequence = Sequence([code(PERSON)])
        person = _item("PNAME", "HAS OBS CONTEXT", PERSON_NAME)
        person.PersonName = name
        items += [observer_type, person]
        if organization:
            items.append(text("HAS OBS CONTEXT", PERSON_ORGANIZATION, organization))
    return items


def sop_class(result: Doc) -> UID:
    """Enhanced SR when a number must be a NUM item (Basic Text SR has no NUM), else Basic Text SR."""
    numbers = any(f.get("type") == "number" for f in result.get("structured") or [])
    return ENHANCED_SR if numbers else BASIC_TEXT_SR


def _unit(unit: str | None) -> Dataset:
    if unit in UCUM:
        return code((UCUM[unit], "UCUM", "no units" if UCUM[unit] == "1" else UCUM[unit]))
    return code((unit[:16], FIELD_SCHEME, unit))


def _fields(result: Doc) -> list[Dataset]:
    """The template's structured fields: NUM with its unit, or TEXT (a choice's wording)."""
    items = []
    for f in result.get("structured") or []:
        name = (f["key"], FIELD_SCHEME, f["label"])
        if f["type"] == "number":
            item = _item("NUM", "CONTAINS", name)
            measured = Dataset()
            measured.NumericValue = format(f["value"], "g")
            measured.MeasurementUnitsCodeSequence = Sequence([_unit(f.get("unit"))])
            item.MeasuredValueSequence = Sequence([measured])
            items.append(item)
        else:
            items.append(text("CONTAINS", name, str(f["value"])))
    return items


def build_sr(result: Doc, *, study: Doc, evidence: list[tuple[str, list[tuple[str, str]]]], created: str,
             institution: str, station: str, local: LocalTime | None = None,
             observers: list[tuple[str, str]] | None = None, pdf_sha256: str | None = None) -> Dataset:
    """``pdf_sha256``: the digest of the signed PDF delivered beside this SR (named in the content tree
    with the PDF's SOP Instance UID, the report's id and version);
    ``evidence``: ``[(series_uid, [(sop_class_uid, sop_instance_uid), ...]), ...]`` from the index;
    ``observers``: ``(name, organisation)`` of each person who signed (default: the reader at ``institution``)."""
    if observers is None:
        observers = [(result.get("reader_name") or "", institution)]
    local = local or LocalTime.named()
    signed = local.dicom(result["signed_at"])
    ds = base_dataset(sop_class_uid=sop_class(result), sop_instance_uid=result["sr_sop_instance_uid"], study=study,
                      result=result, created=created, station=station, local=local)
    ds.InstitutionName = institution
    # SR Document Series (C.17.1)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = result["sr_series_uid"]
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = "远程诊断报告" if result["source"] != "addendum" else "远程诊断报告（补充）"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    # SR Document General (C.17.2)
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    ds.ContentDate, ds.ContentTime = signed.date, signed.time
    # One item per person who signed, each with his own organisation (a consultation has several).
    verifying = []
    for name, organization in observers:
        observer = Dataset()
        observer.VerifyingObserverName = name
        observer.VerifyingObserverIdentificationCodeSequence = Sequence()
        observer.VerifyingOrganization = organization
        observer.VerificationDateTime = signed.datetime
        verifying.append(observer)
    ds.VerifyingObserverSequence = Sequence(verifying)
    ds.PerformedProcedureCodeSequence = Sequence()
    if evidence:
        ds.CurrentRequestedProcedureEvidenceSequence = Sequence([_references(result["study_uid"], evidence)])
    if result.get("addendum_of"):
        # The corrected report's SR (its UID is fixed by its id) is this one's predecessor.
        ds.PredecessorDocumentsSequence = Sequence([_references(result["study_uid"], [
            # An addendum carries its original's fields, so the same rule gives the original's class.
            (uid_for(result["addendum_of"], "sr-series"),
             [(sop_class(result), uid_for(result["addendum_of"], "sr"))])])])
    # SR Document Content (C.17.3): the content tree.
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code(TITLES.get(result["kind"], TITLES["imaging"]))])
    ds.ContinuityOfContent = "SEPARATE"
    critical = _item("CODE", "CONTAINS", CRITICAL)
    critical.ConceptCodeSequence = Sequence([code(YES if result["critical"] else NO)])
    signed_item = _item("DATETIME", "CONTAINS", SIGNED_AT)
    signed_item.DateTime = signed.datetime
    content = [*_person_observers(observers),
               container("CONTAINS", FINDINGS, [text("CONTAINS", FINDING, result.get("findings") or ""),
                                                *_fields(result)]),
               container("CONTAINS", IMPRESSIONS, [text("CONTAINS", IMPRESSION, result.get("impression") or "")]),
               critical]
    if result["critical"] and result.get("critical_category"):
        content.append(text("CONTAINS", CRITICAL_CATEGORY, result["critical_category"]))
    content.append(signed_item)
    if pdf_sha256:
        content += [text("CONTAINS", REPORT_ID, result.get("report_id") or result["id"]),
                    text("CONTAINS", REPORT_VERSION, str(result.get("report_version") or 1))]
        pdf_ref = _item("COMPOSITE", "CONTAINS", SIGNED_PDF)
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ENCAPSULATED_PDF, result["pdf_sop_instance_uid"]
        pdf_ref.ReferencedSOPSequence = Sequence([ref])
        content += [pdf_ref, text("CONTAINS", PDF_SHA256, pdf_sha256)]
    ds.ContentSequence = Sequence(content)
    return ds
