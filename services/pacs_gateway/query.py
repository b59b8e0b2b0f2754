"""C-FIND SCP: Patient Root and Study Root Query/Retrieve Information Model - FIND.

Hierarchical queries at PATIENT, STUDY, SERIES and IMAGE level over the DICOM index
(``docs/data-model.md``).  A calling AE sees only the studies of its organisation and of
the organisations below it in the consortium tree; everything else is simply not there.

The handler runs in a pynetdicom thread; every store read goes through
``gateway.call`` onto the event loop.  Matching itself is :mod:`.matching`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom import evt
from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelFind)

from ..core.consortium import Consortium
from ..core.store.port import Store
from . import matching
from .matching import Matcher, MatchingError

log = logging.getLogger("yilian.pacs_gateway.query")

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
COLLECTION = {"PATIENT": "patients", "STUDY": "studies", "SERIES": "series", "IMAGE": "instances"}
UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
              "IMAGE": "SOPInstanceUID"}
ROOT_LEVEL = {"PATIENT": "PATIENT", "STUDY": "STUDY"}  # model name -> top level

# Status codes of PS3.4 C.4.1.1.4 (C-FIND) and C.4.2.1.5 / C.4.3.1.4 (retrieve).
PENDING = 0xFF00
SUCCESS = 0x0000
CANCEL = 0xFE00
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
OUT_OF_RESOURCES = 0xA700

# Attributes the index carries, by the level that owns them.
PATIENT_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_ATTRIBUTES = ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                    "StudyDescription", "ReferringPhysicianName", "ModalitiesInStudy",
                    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_ATTRIBUTES = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
                     "SeriesDate", "SeriesTime", "NumberOfSeriesRelatedInstances")
IMAGE_ATTRIBUTES = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames")
PATIENT_COUNTS = ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                  "NumberOfPatientRelatedInstances")

# Matching keys the store can filter on directly, per collection (keyword -> field).
STORE_FIELDS = {
    "patients": {"PatientID": "patient_id", "PatientBirthDate": "birth_date", "PatientSex": "sex"},
    "studies": {"StudyInstanceUID": "id", "PatientID": "patient_id", "StudyDate": "study_date",
                "AccessionNumber": "accession_number", "StudyID": "study_id", "PatientSex": "sex",
                "PatientBirthDate": "birth_date"},
    "series": {"SeriesInstanceUID": "id", "StudyInstanceUID": "study_uid", "Modality": "modality"},
    "instances": {"SOPInstanceUID": "id", "SeriesInstanceUID": "series_uid", "StudyInstanceUID": "study_uid",
                  "SOPClassUID": "sop_class_uid"},
}

# Not matching keys: they describe the message, not the data.
MWL_FIND = "1.2.840.10008.5.1.4.31"  # Modality Worklist Information Model - FIND (worklist.py)

MESSAGE_KEYWORDS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle",
                              "InstanceAvailability", "TimezoneOffsetFromUTC", "QueryRetrieveView"})


class QueryError(Exception):
    """A C-FIND/C-GET/C-MOVE identifier the gateway cannot act on; carries the DIMSE status."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]  # Error Comment is LO


@dataclass(frozen=True)
class Model:
    name: str  # "PATIENT" (Patient Root) or "STUDY" (Study Root)
    levels: tuple[str, ...]


FIND_MODELS = {
    PatientRootQueryRetrieveInformationModelFind: Model("PATIENT", LEVELS),
    StudyRootQueryRetrieveInformationModelFind: Model("STUDY", LEVELS[1:]),
}


# --- scope -----------------------------------------------------------------------------

def visible_organizations(consortium: Consortium, organization: str | None) -> list[str]:
    """``organization`` and every organisation below it in the consortium tree."""
    if organization is None or organization not in consortium.organizations:
        return []
    return sorted(oid for oid in consortium.organizations if organization in consortium.ancestors(oid))


def organization_id(found: Any) -> str | None:
    """``gateway.organization_for`` may give an Organization or its id."""
    if found is None:
        return None
    return found if isinstance(found, str) else getattr(found, "id", None)


# --- records: index documents as DICOM keywords ------------------------------------------

def patient_record(doc: dict[str, Any]) -> dict[str, Any]:
    return {"PatientName": doc.get("patient_name"), "PatientID": doc.get("patient_id"),
            "PatientBirthDate": doc.get("birth_date"), "PatientSex": doc.get("sex")}


def study_record(doc: dict[str, Any]) -> dict[str, Any]:
    return {**patient_record(doc),
            "StudyInstanceUID": doc["id"], "StudyDate": doc.get("study_date"), "StudyTime": doc.get("study_time"),
            "AccessionNumber": doc.get("accession_number"), "StudyID": doc.get("study_id"),
            "StudyDescription": doc.get("study_description"),
            "ReferringPhysicianName": doc.get("referring_physician"),
            "ModalitiesInStudy": list(doc.get("modalities") or []),
            "NumberOfStudyRelatedSeries": doc.get("series_count"),
            "NumberOfStudyRelatedInstances": doc.get("instance_count")}


def series_record(doc: dict[str, Any]) -> dict[str, Any]:
    return {"SeriesInstanceUID": doc["id"], "StudyInstanceUID": doc.get("study_uid"),
            "Modality": doc.get("modality"), "SeriesNumber": doc.get("series_number"),
            "SeriesDescription": doc.get("series_description"), "BodyPartExamined": doc.get("body_part"),
            "SeriesDate": doc.get("series_date"), "SeriesTime": doc.get("series_time"),
            "NumberOfSeriesRelatedInstances": doc.get("instance_count")}


def instance_record(doc: dict[str, Any]) -> dict[str, Any]:
    return {"SOPInstanceUID": doc["id"], "SOPClassUID": doc.get("sop_class_uid"),
            "InstanceNumber": doc.get("instance_number"), "Rows": doc.get("rows"),
            "Columns": doc.get("columns"), "NumberOfFrames": doc.get("number_of_frames"),
            "SeriesInstanceUID": doc.get("series_uid"), "StudyInstanceUID": doc.get("study_uid")}


def attributes_at(level: str) -> frozenset[str]:
    """Keywords a record at ``level`` carries (its own and those of the levels above)."""
    names = set(PATIENT_ATTRIBUTES)
    if level == "PATIENT":
        return frozenset(names | set(PATIENT_COUNTS))
    names |= set(STUDY_ATTRIBUTES)
    if level in ("SERIES", "IMAGE"):
        names |= set(SERIES_ATTRIBUTES)
    if level == "IMAGE":
        names |= set(IMAGE_ATTRIBUTES)
    return frozenset(names)


# --- the identifier --------------------------------------------------------------------

@dataclass
class Query:
    level: str
    matchers: list[tuple[str, Matcher]]  # matching keys the gateway supports at this level
    return_keys: list[int]  # tags, in request order


def parse_identifier(identifier: Dataset, model: Model, *, retrieve: bool = False) -> Query:
    """Validate a request identifier against the model and parse its matching keys."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if not level:
        raise QueryError(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "Query/Retrieve Level (0008,0052) missing")
    if level not in model.levels:
        raise QueryError(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                         f"level {level} not in the {model.name.title()} Root model")
    # Hierarchical: unique keys of every level above the query level must be given.
    for above in model.levels[:model.levels.index(level)]:
        _require_unique(identifier, UNIQUE_KEY[above], above)
    if retrieve:
        _require_unique(identifier, UNIQUE_KEY[level], level)
    known = attributes_at(level)
    matchers: list[tuple[str, Matcher]] = []
    return_keys: list[int] = []
    for elem in identifier:
        if elem.tag.group == 0x0002 or elem.tag.is_private:
            continue
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            return_keys.append(int(elem.tag))
        if elem.VR == "SQ" or keyword in MESSAGE_KEYWORDS or keyword in PATIENT_COUNTS or keyword not in known:
            continue  # sequence matching is not supported; counts and unknown keys are return keys only
        try:
            m = matching.parse(elem.VR if elem.VR not in ("UN", "") else dictionary_VR(elem.tag),
                               _text(elem.value))
        except (MatchingError, UnicodeError) as exc:
            raise QueryError(UNABLE_TO_PROCESS, f"{keyword}: {exc}") from None
        if m.kind != "universal":
            matchers.append((keyword, m))
    return Query(level, matchers, return_keys)


def _text(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return str(value)


def _require_unique(identifier: Dataset, keyword: str, level: str) -> None:
    value = identifier.get(keyword)
    text = "" if value is None else ("\\".join(map(str, value)) if not isinstance(value, str) else value)
    if not text.strip("\\ "):
        raise QueryError(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} required at {level} level")
    if any(ch in text for ch in "*?"):
        raise QueryError(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} must be a unique key value")


def store_filter(query: Query, collection: str, organizations: list[str]) -> dict[str, Any]:
    """The part of the query the store can evaluate, plus the scope."""
    where: dict[str, Any] = {"organization": {"$in": organizations}}
    fields = STORE_FIELDS[collection]
    for keyword, m in query.matchers:
        field = fields.get(keyword)
        cond = m.store_condition() if field else None
        if cond is not None:
            where[field] = cond
    return where


# --- finding -----------------------------------------------------------------------------

async def find_records(store: Store, query: Query, organizations: list[str]) -> list[dict[str, Any]]:
    """Records (keyword -> value) of every visible entity at ``query.level`` matching ``query``."""
    if not organizations:
        return []
    level = query.level
    docs = await store.find(COLLECTION[level], store_filter(query, COLLECTION[level], organizations),
                            sort=_SORT[level])
    if level == "PATIENT":
        records = [patient_record(d) | {"_organization": d.get("organization")} for d in docs]
    elif level == "STUDY":
        records = [study_record(d) for d in docs]
    else:
        studies = await _by_id(store, "studies", {d.get("study_uid") for d in docs}, organizations)
        series = (await _by_id(store, "series", {d.get("series_uid") for d in docs}, organizations)
                  if level == "IMAGE" else {})
        records = []
        for d in docs:
            study = studies.get(d.get("study_uid"))
            if study is None:
                continue  # index mid-write: the study document is not there yet
            record = study_record(study)
            if level == "SERIES":
                record |= series_record(d)
            else:
                if d.get("series_uid") not in series:
                    continue
                record |= series_record(series[d["series_uid"]]) | instance_record(d)
            records.append(record)
    matched = [r for r in records if matching.matches_all(query.matchers, r)]
    if level == "PATIENT" and matched and set(query.return_keys) & {tag_for_keyword(k) for k in PATIENT_COUNTS}:
        await _patient_counts(store, matched)
    return matched


_SORT = {"PATIENT": (("patient_id", 1),), "STUDY": (("study_date", 1), ("study_time", 1)),
         "SERIES": (("series_number", 1),), "IMAGE": (("instance_number", 1),)}


async def _by_id(store: Store, collection: str, ids: Iterable[Any], organizations: list[str]) -> dict[str, Any]:
    wanted = sorted(i for i in ids if i)
    if not wanted:
        return {}
    docs = await store.find(collection, {"id": {"$in": wanted}, "organization": {"$in": organizations}})
    return {d["id"]: d for d in docs}


async def _patient_counts(store: Store, records: list[dict[str, Any]]) -> None:
    for r in records:
        studies = await store.find("studies", {"organization": r["_organization"], "patient_id": r["PatientID"]})
        r["NumberOfPatientRelatedStudies"] = len(studies)
        r["NumberOfPatientRelatedSeries"] = sum(int(s.get("series_count") or 0) for s in studies)
        r["NumberOfPatientRelatedInstances"] = sum(int(s.get("instance_count") or 0) for s in studies)


# --- responses ---------------------------------------------------------------------------

def response_identifier(record: dict[str, Any], query: Query, *, retrieve_ae: str) -> Dataset:
    """The C-FIND response identifier: the requested keys, filled from ``record`` (else empty)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = query.level
    non_ascii = False
    for tag in query.return_keys:
        keyword = keyword_for_tag(tag)
        vr = dictionary_VR(tag) if keyword else "UN"
        if keyword == "RetrieveAETitle":
            value: Any = retrieve_ae
        elif keyword == "InstanceAvailability":
            value = "ONLINE"
        else:
            value = record.get(keyword)
        if vr == "SQ":
            ds.add_new(tag, vr, DicomSequence([]))
            continue
        if value is None or value == [] or vr == "UN":
            ds.add_new(tag, vr, None)
            continue
        if isinstance(value, list):
            value = [str(v) for v in value]
            non_ascii |= any(not v.isascii() for v in value)
        else:
            value = str(value)
            non_ascii |= not value.isascii()
        ds.add_new(tag, vr, value)
    if non_ascii:
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 carries every name a clinic may send
    return ds


def find_responses(gateway: Any, model: Model, identifier: Dataset, calling_ae: str
                   ) -> Iterator[tuple[int, Dataset | None]]:
    """Parse, find (on the event loop) and yield ``(status, identifier)`` pairs without the final."""
    query = parse_identifier(identifier, model)
    organizations = visible_organizations(gateway.rt.consortium,
                                          organization_id(gateway.organization_for(calling_ae)))
    records = gateway.call(find_records(gateway.rt.store, query, organizations), timeout=30)
    log.info("C-FIND", extra={"calling_ae": calling_ae, "level": query.level, "matches": len(records)})
    retrieve_ae = gateway.ae.ae_title if hasattr(gateway.ae, "ae_title") else ""
    for record in records:
        yield PENDING, response_identifier(record, query, retrieve_ae=str(retrieve_ae).strip())


def failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def handle_find(gateway: Any, event: evt.Event) -> Iterator[tuple[Any, Dataset | None]]:
    """EVT_C_FIND: Pending per match, Cancel when asked, Success at the end."""
    calling_ae = event.assoc.requestor.ae_title
    if event.request.AffectedSOPClassUID == MWL_FIND:  # one C-FIND handler per AE: the worklist's is there
        from .worklist import handle_find as worklist_find
        yield from worklist_find(gateway, event)
        return
    model = FIND_MODELS.get(event.request.AffectedSOPClassUID)
    if model is None:
        yield failure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "unsupported information model"), None
        return

    def responses() -> Iterator[tuple[int, Dataset | None]]:
        yield from find_responses(gateway, model, event.identifier, calling_ae)
    yield from answer(event, calling_ae, "C-FIND", responses())


def answer(event: evt.Event, calling_ae: str, what: str, responses: Iterator[tuple[int, Dataset | None]]
           ) -> Iterator[tuple[Any, Dataset | None]]:
    """Pass ``responses`` on until the peer cancels, then Success; a :class:`QueryError` or a failure
    (raised while iterating them) ends the query with its status, never a dropped association."""
    try:
        for status, ds in responses:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield status, ds
    except QueryError as exc:
        log.warning(f"{what} refused", extra={"calling_ae": calling_ae, "status": hex(exc.status),
                                              "reason": exc.comment})
        yield failure(exc.status, exc.comment), None
        return
    except Exception as exc:
        log.exception(f"{what} failed", extra={"calling_ae": calling_ae})
        yield failure(UNABLE_TO_PROCESS, f"unable to process: {type(exc).__name__}"), None
        return
    yield SUCCESS, None


def install(gateway: Any) -> list[tuple[Any, Any]]:
    """Add the FIND presentation contexts to ``gateway.ae``; return the handler to bind."""
    for uid in FIND_MODELS:
        gateway.ae.add_supported_context(uid)

    def on_find(event: evt.Event) -> Iterator[tuple[Any, Dataset | None]]:
        return handle_find(gateway, event)
    return [(evt.EVT_C_FIND, on_find)]
