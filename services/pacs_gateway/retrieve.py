"""C-GET and C-MOVE SCP: Patient Root and Study Root Query/Retrieve - GET and - MOVE.

Both resolve the identifier's unique keys (within the calling AE's scope, as C-FIND)
to stored instances and send each one, as received, with a C-STORE sub-operation:
C-GET back on the requestor's own association (it takes the Storage SCP role by
SCP/SCU Role Selection), C-MOVE on a new association to a destination registered in
the consortium as some organisation's ``scp``.

Transfer syntax: an instance goes in the syntax it was stored in when the peer accepted
it; uncompressed syntaxes are converted among themselves; a compressed instance the
peer cannot take is decompressed when pydicom can (JPEG baseline/extended, JPEG 2000
and RLE here), else its sub-operation fails and the final status is a warning (0xB000)
listing it in Failed SOP Instance UID List.

Files are read in the pynetdicom thread; store queries go to the event loop through
``gateway.call``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit,
                         JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless, RLELossless)
from pynetdicom import build_context, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelGet,
                                  PatientRootQueryRetrieveInformationModelMove,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)

from ..core.store.port import Store
from . import query as q

log = logging.getLogger("yilian.pacs_gateway.retrieve")

GET_MODELS = {
    PatientRootQueryRetrieveInformationModelGet: q.Model("PATIENT", q.LEVELS),
    StudyRootQueryRetrieveInformationModelGet: q.Model("STUDY", q.LEVELS[1:]),
}
MOVE_MODELS = {
    PatientRootQueryRetrieveInformationModelMove: q.Model("PATIENT", q.LEVELS),
    StudyRootQueryRetrieveInformationModelMove: q.Model("STUDY", q.LEVELS[1:]),
}
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# What the gateway will send storage instances in (it stores them as received).
STORAGE_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                    ExplicitVRBigEndian, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1,
                    UID("1.2.840.10008.1.2.4.57"), JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless,
                    JPEG2000, RLELossless]
VERIFICATION = "1.2.840.10008.1.1"
MAX_MOVE_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255


# --- which instances -------------------------------------------------------------------

async def instances_for(store: Store, query: q.Query, organizations: list[str]) -> list[dict[str, Any]]:
    """The visible instances the retrieve identifier's unique keys select, in study/series/number order."""
    if not organizations:
        return []
    where: dict[str, Any] = {"organization": {"$in": organizations}}
    keys = dict(query.matchers)
    if "PatientID" in keys:
        studies = await store.find("studies", q.store_filter(
            q.Query("STUDY", [("PatientID", keys["PatientID"])], []), "studies", organizations))
        study_uids = [s["id"] for s in studies if keys["PatientID"].matches(s.get("patient_id"))]
        if "StudyInstanceUID" in keys:
            study_uids = [u for u in study_uids if keys["StudyInstanceUID"].matches(u)]
        if not study_uids:
            return []
        where["study_uid"] = {"$in": study_uids}
    for keyword, field in (("StudyInstanceUID", "study_uid"), ("SeriesInstanceUID", "series_uid"),
                           ("SOPInstanceUID", "id")):
        m = keys.get(keyword)
        if m is None or field in where:
            continue
        cond = m.store_condition()
        if cond is None:
            raise q.QueryError(q.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} must list UIDs")
        where[field] = cond
    docs = await store.find("instances", where)
    return sorted(docs, key=lambda d: (d.get("study_uid") or "", d.get("series_uid") or "",
                                       d.get("instance_number") or 0, d["id"]))


def resolve(gateway: Any, model: q.Model, identifier: Dataset, calling_ae: str) -> list[dict[str, Any]]:
    query = q.parse_identifier(identifier, model, retrieve=True)
    organizations = q.visible_organizations(gateway.rt.consortium,
                                            q.organization_id(gateway.organization_for(calling_ae)))
    return gateway.call(instances_for(gateway.rt.store, query, organizations), timeout=30)


# --- reading and fitting instances -------------------------------------------------------

def load(gateway: Any, doc: dict[str, Any]) -> Dataset:
    """The stored Part 10 file as a dataset (its File Meta says the transfer syntax)."""
    blobs = gateway.rt.blobs
    path: Path | None = blobs.local_path(doc["blob_key"])
    if path is not None:
        return dcmread(path)
    raw = gateway.call(blobs.read(doc["blob_key"]), timeout=120)
    return dcmread(io.BytesIO(raw))


def fit(ds: Dataset, assoc: Any) -> Dataset:
    """Make ``ds`` sendable on ``assoc`` if it can be: decompress when only uncompressed was accepted."""
    ts = UID(ds.file_meta.TransferSyntaxUID)
    sop_class = ds.file_meta.get("MediaStorageSOPClassUID") or ds.SOPClassUID
    accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts
                if cx.abstract_syntax == sop_class and cx.as_scu}
    if ts in accepted or not ts.is_compressed:
        return ds  # uncompressed syntaxes: pynetdicom converts between them
    if not accepted & set(UNCOMPRESSED):
        log.warning("peer accepted no transfer syntax for instance", extra={
            "sop_instance_uid": str(ds.SOPInstanceUID), "transfer_syntax": str(ts)})
        return ds  # the C-STORE sub-operation fails and is reported
    try:
        ds.decompress(generate_instance_uid=False)  # same instance, another transfer syntax
    except Exception as exc:  # no decoder for this syntax
        log.warning("cannot decompress for peer; sub-operation fails", extra={
            "sop_instance_uid": str(ds.SOPInstanceUID), "transfer_syntax": str(ts), "reason": str(exc)})
        return ds
    log.info("decompressed for peer", extra={"sop_instance_uid": str(ds.SOPInstanceUID),
                                             "from_transfer_syntax": str(ts)})
    return ds


def _sub_operations(gateway: Any, event: evt.Event, docs: list[dict[str, Any]], assoc_of: Any
                    ) -> Iterator[tuple[Any, Dataset | None]]:
    for doc in docs:
        if event.is_cancelled:
            yield q.CANCEL, None
            return
        try:
            ds = load(gateway, doc)
        except Exception as exc:
            log.error("stored instance unreadable", extra={"sop_instance_uid": doc["id"], "reason": str(exc)})
            ds = Dataset()  # counted as a failed sub-operation by pynetdicom
            ds.SOPInstanceUID = doc["id"]
            yield q.PENDING, ds
            continue
        yield q.PENDING, fit(ds, assoc_of())


# --- C-GET -------------------------------------------------------------------------------

def handle_get(gateway: Any, event: evt.Event) -> Iterator[Any]:
    """EVT_C_GET: number of sub-operations, then one Pending per instance sent back."""
    calling_ae = event.assoc.requestor.ae_title
    model = GET_MODELS.get(event.request.AffectedSOPClassUID)
    try:
        if model is None:
            raise q.QueryError(q.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "unsupported information model")
        docs = resolve(gateway, model, event.identifier, calling_ae)
    except Exception as exc:
        yield 1  # pynetdicom needs a count before any status
        yield _refusal("C-GET", calling_ae, exc), None
        return
    log.info("C-GET", extra={"calling_ae": calling_ae, "instances": len(docs)})
    yield len(docs)
    yield from _sub_operations(gateway, event, docs, lambda: event.assoc)


# --- C-MOVE ------------------------------------------------------------------------------

def move_contexts(docs: list[dict[str, Any]]) -> list[Any]:
    """Presentation contexts for the instances to move: stored syntax, plus uncompressed apart."""
    wanted: dict[str, set[str]] = {}
    for doc in docs:
        wanted.setdefault(doc["sop_class_uid"], set()).add(doc.get("transfer_syntax_uid") or ExplicitVRLittleEndian)
    contexts = []
    for sop_class, syntaxes in sorted(wanted.items()):
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
        for ts in sorted(syntaxes - set(UNCOMPRESSED)):
            contexts.append(build_context(sop_class, ts))  # its own context: accepted or not on its own
    return contexts[:MAX_MOVE_CONTEXTS]


def handle_move(gateway: Any, event: evt.Event) -> Iterator[Any]:
    """EVT_C_MOVE: destination, number of sub-operations, then one Pending per instance sent."""
    calling_ae = event.assoc.requestor.ae_title
    destination = str(event.move_destination or "").strip()
    endpoint = gateway.rt.consortium.endpoint(destination)
    if endpoint is None:
        log.warning("C-MOVE to unknown destination", extra={"calling_ae": calling_ae, "destination": destination})
        yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
        return
    model = MOVE_MODELS.get(event.request.AffectedSOPClassUID)
    try:
        if model is None:
            raise q.QueryError(q.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "unsupported information model")
        docs = resolve(gateway, model, event.identifier, calling_ae)
    except Exception as exc:
        # pynetdicom opens the destination association before the first status; it is released unused.
        yield endpoint.host, endpoint.port, {"contexts": [build_context(VERIFICATION)]}
        yield 1
        yield _refusal("C-MOVE", calling_ae, exc), None
        return
    store_assoc: list[Any] = []
    handlers = [(evt.EVT_ESTABLISHED, lambda e: store_assoc.append(e.assoc))]
    yield endpoint.host, endpoint.port, {"contexts": move_contexts(docs) or [build_context(VERIFICATION)],
                                         "evt_handlers": handlers}
    log.info("C-MOVE", extra={"calling_ae": calling_ae, "destination": destination, "instances": len(docs)})
    yield len(docs)
    yield from _sub_operations(gateway, event, docs, lambda: store_assoc[0])


def _refusal(what: str, calling_ae: str, exc: Exception) -> Dataset:
    if isinstance(exc, q.QueryError):
        log.warning(f"{what} refused", extra={"calling_ae": calling_ae, "status": hex(exc.status),
                                              "reason": exc.comment})
        return q.failure(exc.status, exc.comment)
    log.exception(f"{what} failed", extra={"calling_ae": calling_ae})
    return q.failure(q.UNABLE_TO_PROCESS, f"unable to process: {type(exc).__name__}")


# --- wiring --------------------------------------------------------------------------------

def install(gateway: Any) -> list[tuple[Any, Any]]:
    """Add GET/MOVE contexts and Storage contexts with role selection; return the handlers."""
    ae = gateway.ae
    for uid in (*GET_MODELS, *MOVE_MODELS):
        ae.add_supported_context(uid)
    # C-GET sends C-STORE back on the requestor's association: accept its SCP role (and
    # keep accepting its SCU role, so ordinary C-STORE senders are unaffected).
    existing = {cx.abstract_syntax: list(cx.transfer_syntax) for cx in ae.supported_contexts}
    for cx in AllStoragePresentationContexts:
        syntaxes = existing.get(cx.abstract_syntax, STORAGE_SYNTAXES)
        ae.add_supported_context(cx.abstract_syntax, syntaxes, scu_role=True, scp_role=True)
    return [(evt.EVT_C_GET, lambda event: handle_get(gateway, event)),
            (evt.EVT_C_MOVE, lambda event: handle_move(gateway, event))]
