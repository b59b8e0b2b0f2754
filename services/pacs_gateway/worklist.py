"""Modality Worklist C-FIND (PS3.4 K) and Modality Performed Procedure Step N-CREATE / N-SET (PS3.4 F).

The worklist is the organisation's scheduled exam requests (``orders``, services/workflow/orders):
a modality AE sees its own organisation's items only, matched on Scheduled Procedure Step Start
Date/Time (ranges), Modality, Scheduled Station AE Title, Patient's Name/ID and Accession Number,
and gets them in the character set its query names (ISO_IR 192, GB18030; UTF-8 when it names none
and a value is not ASCII).  Sequence keys other than the Scheduled Procedure Step Sequence are
return keys only.

An MPPS instance is kept in ``performed_procedure_steps`` (id = its SOP Instance UID, owned by the
organisation that created it) and every status it reports (IN PROGRESS, COMPLETED, DISCONTINUED)
is emitted as ``procedure_step.reported`` in the same transaction; the workflow moves the order.
Handlers run on pynetdicom's threads; store work goes through ``gateway.call`` onto the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom import evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from ..core.events import Event
from ..core.times import iso
from . import matching
from .ingest import SOURCE
from .matching import Matcher, MatchingError
from .query import PENDING, UNABLE_TO_PROCESS, QueryError, _text, answer, organization_id

log = logging.getLogger("yilian.pacs_gateway.worklist")

MWL_FIND = str(ModalityWorklistInformationFind)
MPPS = str(ModalityPerformedProcedureStep)
ORDERS = "orders"
STEPS = "performed_procedure_steps"
SPS = "ScheduledProcedureStepSequence"

# DIMSE N- status codes (PS3.7 C) and MPPS's own (PS3.4 F.7.2)
N_SUCCESS = 0x0000
NO_SUCH_OBJECT_INSTANCE = 0x0112
DUPLICATE_SOP_INSTANCE = 0x0111
INVALID_ATTRIBUTE_VALUE = 0x0106
MISSING_ATTRIBUTE = 0x0120
PROCESSING_FAILURE = 0x0110  # with (0000,0902) "may no longer be updated" (F.7.2.2, Error ID A710)
STATUSES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")

# Issuer of Patient ID of the resident ID number (居民身份证号) in Other Patient IDs Sequence (docs/orders.md)
RESIDENT_ID_ISSUER = "CN_RESIDENT_ID"
PRIORITY = {"stat": "STAT", "urgent": "HIGH", "routine": "ROUTINE"}
CODECS = {"ISO_IR 192": "utf-8", "GB18030": "gb18030", "GBK": "gbk", "ISO_IR 100": "latin-1"}
CHARACTER_SETS = tuple(CODECS)
SPS_KEYS = ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
            "Modality", "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription",
            "ScheduledProcedureStepID", "ScheduledProcedureStepStatus", "ScheduledProtocolCodeSequence")
# Matching keys the store filters on directly (keyword -> order field); the rest is matched in Python.
STORE_FIELDS = {"ScheduledProcedureStepStartDate": "scheduled_date", "AccessionNumber": "accession_number",
                "PatientID": "patient_id", "Modality": "modality", "ScheduledStationAETitle": "station_ae"}
MATCHING = frozenset({"PatientName", "PatientID", "AccessionNumber", "PatientBirthDate", "PatientSex",
                      "RequestedProcedureID", "StudyInstanceUID", *SPS_KEYS}) - {"ScheduledProtocolCodeSequence"}


def order_record(o: dict[str, Any]) -> dict[str, Any]:
    """An order as the worklist's attributes (DICOM keywords); sequences as lists of such records."""
    code = ([{"CodeValue": o["procedure_code"], "CodingSchemeDesignator": "99YILIAN",
              "CodeMeaning": o.get("procedure_description") or o["procedure_code"]}]
            if o.get("procedure_code") else [])
    return {
        "PatientName": o.get("patient_name"), "PatientID": o.get("patient_id"),
        "PatientBirthDate": o.get("birth_date"), "PatientSex": o.get("sex"),
        "AccessionNumber": o["accession_number"], "StudyInstanceUID": o["study_instance_uid"],
        "RequestedProcedureID": o["requested_procedure_id"],
        "RequestedProcedureDescription": o.get("procedure_description"),
        "RequestedProcedurePriority": PRIORITY.get(o.get("priority") or "", "ROUTINE"),
        "RequestedProcedureCodeSequence": code,
        "ReferringPhysicianName": o.get("requesting_physician"), "RequestingPhysician": o.get("requesting_physician"),
        "RequestingService": o.get("requesting_department"),  # 申请科室: the modality copies it into the images
        "ReasonForTheRequestedProcedure": (o.get("clinical_question") or "")[:64] or None,
        "BodyPartExamined": o.get("body_part"),
        "OtherPatientIDsSequence": ([{"PatientID": o["resident_id"], "IssuerOfPatientID": RESIDENT_ID_ISSUER,
                                      "TypeOfPatientID": "TEXT"}] if o.get("resident_id") else []),
        # The one Scheduled Procedure Step of the order, flattened for matching
        "ScheduledStationAETitle": o.get("station_ae"), "ScheduledProcedureStepStartDate": o["scheduled_date"],
        "ScheduledProcedureStepStartTime": o["scheduled_time"], "Modality": o["modality"],
        "ScheduledPerformingPhysicianName": None, "ScheduledProcedureStepDescription": o.get("procedure_description"),
        "ScheduledProcedureStepID": o["scheduled_step_id"], "ScheduledProcedureStepStatus": "SCHEDULED",
        "ScheduledProtocolCodeSequence": code,
    }


# --- the query -----------------------------------------------------------------------------

def parse(identifier: Dataset) -> tuple[list[tuple[str, Matcher]], str | None]:
    """The matching keys (top level and inside the Scheduled Procedure Step item) and the character set."""
    matchers: list[tuple[str, Matcher]] = []
    elements = list(identifier)
    sps = identifier.get(SPS)
    if sps is not None and len(sps):
        elements += list(sps[0])
    for elem in elements:
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if keyword not in MATCHING or elem.VR == "SQ":
            continue
        try:
            m = matching.parse(elem.VR if elem.VR not in ("UN", "") else dictionary_VR(elem.tag), _text(elem.value))
        except (MatchingError, UnicodeError) as exc:
            raise QueryError(UNABLE_TO_PROCESS, f"{keyword}: {exc}") from None
        if m.kind != "universal":
            matchers.append((keyword, m))
    return matchers, character_set(identifier)


def character_set(identifier: Dataset) -> str | None:
    raw = identifier.get("SpecificCharacterSet")
    values = [str(v).strip().upper() for v in (raw if isinstance(raw, (list, tuple)) or
                                               type(raw).__name__ == "MultiValue" else [raw]) if v]
    for name in values:
        if name in CHARACTER_SETS:
            return name
    return None


async def find(store: Any, matchers: list[tuple[str, Matcher]], organization: str) -> list[dict[str, Any]]:
    where: dict[str, Any] = {"organization": organization, "on_worklist": True}
    for keyword, m in matchers:
        field = STORE_FIELDS.get(keyword)
        cond = m.store_condition() if field else None
        if cond is not None:
            where[field] = cond
    orders = await store.find(ORDERS, where, sort=(("scheduled_date", 1), ("scheduled_time", 1)))
    records = [order_record(o) for o in orders]
    return [r for r in records if matching.matches_all(matchers, r)]


def response(record: dict[str, Any], identifier: Dataset, charset: str | None) -> Dataset:
    """The requested keys filled from ``record``; an empty Scheduled Procedure Step item asks for all of it.

    In the character set the query named when every value fits in it, else UTF-8 (a name in 汉字 asked
    for in Latin-1 is still sent whole); no Specific Character Set when everything is ASCII and none
    was asked for."""
    ds = Dataset()
    texts = list(_strings(record))
    if charset is None or not all(_fits(t, charset) for t in texts):
        charset = None if all(t.isascii() for t in texts) else "ISO_IR 192"
    if charset is not None:
        ds.SpecificCharacterSet = charset
    _fill(ds, identifier, record)
    return ds


def _fits(text: str, charset: str) -> bool:
    try:
        text.encode(CODECS[charset])
    except UnicodeEncodeError:
        return False
    return True


def _strings(record: dict[str, Any]) -> Iterator[str]:
    for v in record.values():
        if isinstance(v, str):
            yield v
        elif isinstance(v, list):
            for item in v:
                if isinstance(item, dict):
                    yield from _strings(item)


def _fill(ds: Dataset, template: Dataset, record: dict[str, Any]) -> None:
    for elem in template:
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if elem.tag.group == 0x0002 or elem.tag.is_private or keyword == "SpecificCharacterSet":
            continue
        vr = dictionary_VR(elem.tag) if keyword else "UN"
        if vr == "SQ":
            ds.add_new(elem.tag, "SQ", DicomSequence(_items(keyword, elem.value, record)))
            continue
        value = record.get(keyword)
        ds.add_new(elem.tag, vr, None if value in (None, "", []) or vr == "UN" else value)


def _items(keyword: str, requested: Any, record: dict[str, Any]) -> list[Dataset]:
    asked = requested[0] if requested is not None and len(requested) else None
    if keyword == SPS:
        item = Dataset()
        if asked is None or not len(asked):  # universal sequence matching: the whole item
            asked = Dataset()
            for key in SPS_KEYS:
                asked.add_new(key, dictionary_VR(key), DicomSequence([]) if key.endswith("Sequence") else None)
        _fill(item, asked, record)
        return [item]
    codes = record.get(keyword)
    if not isinstance(codes, list):
        return []
    out = []
    for code in codes:
        item = Dataset()
        if asked is None or not len(asked):
            for key, value in code.items():
                item.add_new(key, dictionary_VR(key), value)
        else:
            _fill(item, asked, code)
        out.append(item)
    return out


def handle_find(gateway: Any, event: evt.Event) -> Iterator[tuple[Any, Dataset | None]]:
    """EVT_C_FIND for the Modality Worklist model (query.py hands it over)."""
    calling_ae = event.assoc.requestor.ae_title.strip()
    yield from answer(event, calling_ae, "worklist C-FIND", _responses(gateway, event, calling_ae))


def _responses(gateway: Any, event: evt.Event, calling_ae: str) -> Iterator[tuple[int, Dataset | None]]:
    identifier = event.identifier
    matchers, charset = parse(identifier)
    organization = organization_id(gateway.organization_for(calling_ae))
    records = [] if organization is None else gateway.call(find(gateway.rt.store, matchers, organization), timeout=30)
    log.info("worklist C-FIND", extra={"calling_ae": calling_ae, "matches": len(records)})
    for record in records:
        yield PENDING, response(record, identifier, charset)


# --- MPPS ------------------------------------------------------------------------------------

class StepRefused(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status, self.comment = status, comment[:64]


def scheduled_references(attributes: Dataset) -> dict[str, list[str]]:
    """What the MPPS says it performed: from its Scheduled Step Attributes Sequence (0040,0270)."""
    out: dict[str, list[str]] = {"accession_numbers": [], "scheduled_step_ids": [], "requested_procedure_ids": [],
                                 "study_uids": []}
    for item in attributes.get("ScheduledStepAttributesSequence") or []:
        for key, field in (("AccessionNumber", "accession_numbers"), ("ScheduledProcedureStepID", "scheduled_step_ids"),
                           ("RequestedProcedureID", "requested_procedure_ids"), ("StudyInstanceUID", "study_uids")):
            value = str(item.get(key) or "").strip()
            if value and value not in out[field]:
                out[field].append(value)
    return out


def _status_of(attributes: Dataset) -> str | None:
    value = attributes.get("PerformedProcedureStepStatus")
    return None if value is None else str(value).strip().upper()


async def create_step(rt: Any, uid: str, organization: str, calling_ae: str, attributes: Dataset) -> None:
    status = _status_of(attributes)
    if status is None:
        raise StepRefused(MISSING_ATTRIBUTE, "Performed Procedure Step Status missing")
    if status != "IN PROGRESS":
        raise StepRefused(INVALID_ATTRIBUTE_VALUE, f"N-CREATE status must be IN PROGRESS, not {status}")
    refs = scheduled_references(attributes)
    now = iso(time.time())
    async with rt.store.transaction() as tx:
        if await tx.get(STEPS, uid) is not None:
            raise StepRefused(DUPLICATE_SOP_INSTANCE, "MPPS SOP Instance UID already exists")
        doc = {"id": uid, "organization": organization, "calling_ae": calling_ae, "status": status,
               "modality": str(attributes.get("Modality") or ""), **refs, "created_at": now, "updated_at": now}
        await tx.insert(STEPS, doc)
        tx.emit(_reported(doc))


async def set_step(rt: Any, uid: str, organization: str, modifications: Dataset) -> None:
    status = _status_of(modifications)
    if status is not None and status not in STATUSES:
        raise StepRefused(INVALID_ATTRIBUTE_VALUE, f"Performed Procedure Step Status {status} unknown")
    now = iso(time.time())
    async with rt.store.transaction() as tx:
        doc = await tx.get(STEPS, uid)
        if doc is None or doc["organization"] != organization:  # another organisation's is not there
            raise StepRefused(NO_SUCH_OBJECT_INSTANCE, "no such MPPS SOP Instance")
        if doc["status"] != "IN PROGRESS":
            raise StepRefused(PROCESSING_FAILURE, f"MPPS is {doc['status']} and may no longer be updated")
        if status is None or status == doc["status"]:
            await tx.update(STEPS, uid, {"updated_at": now})
            return
        doc = {**doc, "status": status, "updated_at": now}
        await tx.update(STEPS, uid, {"status": status, "updated_at": now})
        tx.emit(_reported(doc))


async def forwarded_step(rt: Any, report: dict[str, Any], organization: str) -> str:
    """An MPPS status a modality reported at a township edge, forwarded when the link allowed
    (``POST /api/v1/edge/procedure-steps``): kept and emitted as if reported here.  The edge sends
    each step's latest status, so a step may arrive COMPLETED without its IN PROGRESS.  A status
    already held is ``unchanged`` (a resend after a cut connection); ``created`` or ``updated``."""
    uid, status = report["sop_instance_uid"], report["status"]
    if status not in STATUSES:
        raise StepRefused(INVALID_ATTRIBUTE_VALUE, f"Performed Procedure Step Status {status} unknown")
    now = iso(time.time())
    async with rt.store.transaction() as tx:
        doc = await tx.get(STEPS, uid)
        if doc is not None and doc["organization"] != organization:
            raise StepRefused(DUPLICATE_SOP_INSTANCE, "MPPS SOP Instance UID already exists")
        if doc is not None and doc["status"] == status:
            return "unchanged"
        if doc is not None and doc["status"] != "IN PROGRESS":
            raise StepRefused(PROCESSING_FAILURE, f"MPPS is {doc['status']} and may no longer be updated")
        if doc is None:
            refs = {k: [str(v) for v in report.get(k) or []] for k in
                    ("accession_numbers", "scheduled_step_ids", "requested_procedure_ids", "study_uids")}
            doc = {"id": uid, "organization": organization, "calling_ae": report["calling_ae"], "status": status,
                   "modality": report.get("modality") or "", **refs, "via_edge": True, "created_at": now,
                   "updated_at": now}
            await tx.insert(STEPS, doc)
            outcome = "created"
        else:
            doc = {**doc, "status": status, "updated_at": now}
            await tx.update(STEPS, uid, {"status": status, "updated_at": now})
            outcome = "updated"
        tx.emit(_reported(doc))
    return outcome


def _reported(doc: dict[str, Any]) -> Event:
    data = {k: doc[k] for k in ("organization", "calling_ae", "status", "accession_numbers", "scheduled_step_ids",
                                "requested_procedure_ids", "study_uids", "modality")}
    return Event("procedure_step.reported", subject=doc["id"], source=SOURCE,
                 data={"sop_instance_uid": doc["id"], **data})


def _n_status(status: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def handle_n_create(gateway: Any, event: evt.Event) -> tuple[Any, Dataset | None]:
    uid = str(event.request.AffectedSOPInstanceUID or "")

    def create(calling_ae: str, org: str | None) -> Dataset:
        if not uid:
            raise StepRefused(MISSING_ATTRIBUTE, "Affected SOP Instance UID missing")
        if org is None or calling_ae not in gateway.rt.consortium.organizations[org].modality_aes:
            raise StepRefused(PROCESSING_FAILURE, "only a modality AE title may report MPPS")
        attributes = event.attribute_list
        gateway.call(create_step(gateway.rt, uid, org, calling_ae, attributes), timeout=30)
        return attributes
    return _n_request(gateway, event, "N-CREATE", uid, create)


def handle_n_set(gateway: Any, event: evt.Event) -> tuple[Any, Dataset | None]:
    uid = str(event.request.RequestedSOPInstanceUID or "")

    def modify(calling_ae: str, org: str | None) -> Dataset:
        if org is None:
            raise StepRefused(NO_SUCH_OBJECT_INSTANCE, "no such MPPS SOP Instance")
        modifications = event.modification_list
        gateway.call(_settled_then_set(gateway, uid, org, modifications), timeout=30)
        return modifications
    return _n_request(gateway, event, "N-SET", uid, modify)


def _n_request(gateway: Any, event: evt.Event, what: str, uid: str,
               work: Callable[[str, str | None], Dataset]) -> tuple[Any, Dataset | None]:
    """Run an MPPS N-CREATE / N-SET: Success with the attributes, or the refusal's status, logged."""
    calling_ae = event.assoc.requestor.ae_title.strip()
    extra = {"calling_ae": calling_ae, "sop_instance_uid": uid}
    try:
        attributes = work(calling_ae, organization_id(gateway.organization_for(calling_ae)))
    except StepRefused as exc:
        log.warning(f"MPPS {what} refused", extra={**extra, "status": hex(exc.status), "reason": exc.comment})
        return _n_status(exc.status, exc.comment), None
    except Exception as exc:  # the store failed: nothing kept, the modality may retry
        log.exception(f"MPPS {what} failed", extra=extra)
        return _n_status(PROCESSING_FAILURE, f"processing failure: {type(exc).__name__}"), None
    log.info(f"MPPS {what}", extra={**extra, "status": _status_of(attributes)})
    return N_SUCCESS, attributes


async def _settled_then_set(gateway: Any, uid: str, organization: str, modifications: Dataset) -> None:
    # A C-STORE is answered once journalled and indexed milliseconds later: before COMPLETED is
    # reported, what this process acknowledged is indexed, so the workflow finds the images the
    # modality sent before its N-SET and queues the reading at once (not after the quiet period).
    if _status_of(modifications) == "COMPLETED":
        await gateway.ingest.settled()
    await set_step(gateway.rt, uid, organization, modifications)


def install(gateway: Any) -> list[tuple[Any, Any]]:
    """Accept the Modality Worklist FIND and MPPS contexts; C-FIND is dispatched by ``query.handle_find``."""
    gateway.ae.add_supported_context(MWL_FIND)
    gateway.ae.add_supported_context(MPPS)
    return [(evt.EVT_N_CREATE, lambda event: handle_n_create(gateway, event)),
            (evt.EVT_N_SET, lambda event: handle_n_set(gateway, event))]
