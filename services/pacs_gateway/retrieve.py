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

Streaming: when the peer accepted the instance's stored transfer syntax and the blob
store has it as a local file, the file's data set is sent as it is, read in PDU-sized
pieces (pynetdicom's chunked C-STORE), never decoded: memory stays flat whatever the
instance's size.  Only a conversion (another uncompressed syntax, decompression) or a
blob store without local files (GridFS) reads the instance whole, as a pydicom Dataset.

C-MOVE to an organisation whose ``scp`` says ``tls: true`` opens the sub-association over
TLS (``YILIAN_DICOM_TLS_CA``, ``YILIAN_DICOM_TLS_CERT``, ``YILIAN_DICOM_TLS_KEY``).  A destination that cannot be
reached or whose certificate does not verify fails every sub-operation: final status 0xA702
with the instances in Failed SOP Instance UID List (the destination is known, so not 0xA801).

Files are read in the pynetdicom thread; store queries go to the event loop through
``gateway.call``.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit,
                         JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless, RLELossless)
from pynetdicom import _config, build_context, evt
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelGet,
                                  PatientRootQueryRetrieveInformationModelMove,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)

from ..core import tls
from ..core.store.port import Store
from ..core import bounded
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
# P-DATA a streaming C-STORE may have queued for the socket before it waits: pynetdicom's
# queue is unbounded, and a disk outruns a network, so without a bound the file ends up in RAM.
MAX_QUEUED_BYTES = 4 << 20


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
    """The stored Part 10 file as a dataset (its File Meta says the transfer syntax).

    A file that fails the store's checks (:mod:`.bounded`: stored before them, or damaged) raises
    :class:`bounded.Refused` before pydicom decodes it: its sub-operation fails, named in the
    Failed SOP Instance UID List, and the association goes on."""
    blobs = gateway.rt.blobs
    limits = bounded.Limits.of(gateway.rt.settings)
    path: Path | None = blobs.local_path(doc["blob_key"])
    if path is None:
        raw = gateway.call(blobs.read(doc["blob_key"]), timeout=120)
        bounded.check_part10(memoryview(raw), doc.get("transfer_syntax_uid") or "", limits)
        return dcmread(io.BytesIO(raw))
    bounded.check_file(path, doc.get("transfer_syntax_uid") or "", limits)
    return dcmread(path)


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
        assoc = assoc_of()
        if assoc is None:  # C-MOVE destination unreachable: the sub-operation fails without reading
            yield q.PENDING, _named(doc["id"])
            continue
        try:
            stored = streamable(gateway, doc, assoc)
            ds = stored if stored is not None else fit(load(gateway, doc), assoc)
        except Exception as exc:
            log.error("stored instance unreadable", extra={"sop_instance_uid": doc["id"], "reason": str(exc)})
            ds = _named(doc["id"])  # counted as a failed sub-operation by pynetdicom
        yield q.PENDING, ds


def _named(sop_instance_uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = sop_instance_uid
    return ds


# --- streaming stored files ------------------------------------------------------------------

class StoredFile(Dataset):
    """A stored Part 10 file to send as it is: only its UIDs are decoded, the data set is streamed.

    A Dataset so pynetdicom's C-GET/C-MOVE SCP takes it from the handler (it refuses anything
    else); the association's ``send_c_store``, wrapped by :func:`stream_stored_files`, then
    hands pynetdicom the path instead.
    """

    def __init__(self, path: Path, sop_class_uid: str, sop_instance_uid: str) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        self.path = path


def streamable(gateway: Any, doc: dict[str, Any], assoc: Any) -> StoredFile | None:
    """The instance as a file to stream if it is a local file in a syntax the peer accepted, else None."""
    path: Path | None = gateway.rt.blobs.local_path(doc["blob_key"])
    if path is None:
        return None  # e.g. GridFS: read whole
    meta = read_file_meta_info(path)  # the File Meta group only
    ts, sop_class = meta.get("TransferSyntaxUID"), meta.get("MediaStorageSOPClassUID")
    sop_instance = meta.get("MediaStorageSOPInstanceUID")
    if not (ts and sop_class and sop_instance):
        return None
    if not any(cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == ts and cx.as_scu
               for cx in assoc.accepted_contexts):
        return None  # a conversion is needed: decode
    return StoredFile(Path(path), str(sop_class), str(sop_instance))


def stream_stored_files(assoc: Any) -> None:
    """Make ``assoc`` send :class:`StoredFile` sub-operations from their path, in PDU-sized reads."""
    if getattr(assoc, "_yilian_streams", False):
        return
    send = assoc.send_c_store

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, StoredFile):
            return send(dataset, *args, **kwargs)
        # pynetdicom then sends the file's data set raw, read piece by piece (exact context only).
        _config.STORE_SEND_CHUNKED_DATASET = True
        bound_send_queue(assoc)
        return send(dataset.path, *args, **kwargs)

    assoc.send_c_store = send_c_store
    assoc._yilian_streams = True


def bound_send_queue(assoc: Any) -> None:
    """Make the C-STORE sender wait while the socket thread has enough P-DATA queued (backpressure)."""
    dul = assoc.dul
    if getattr(dul, "_yilian_bounded", False):
        return
    put = dul.send_pdu

    def send_pdu(primitive: Any) -> None:
        if isinstance(primitive, P_DATA) and threading.current_thread() is not dul:
            limit = max(4, MAX_QUEUED_BYTES // max(assoc.dimse.maximum_pdu_size or MAX_QUEUED_BYTES, 1))
            while dul.to_provider_queue.qsize() >= limit and dul.is_alive() and assoc.is_established:
                time.sleep(0.0002)
        put(primitive)

    dul.send_pdu = send_pdu
    dul._yilian_bounded = True


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
    stream_stored_files(event.assoc)
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
        tls_args = (destination_tls(gateway), None) if endpoint.tls else None
    except Exception as exc:
        # pynetdicom asks for a destination before the first status; it gets a stand-in, unopened.
        yield endpoint.host, endpoint.port, {"move_destination": destination, "connect": False}
        yield 1
        yield _refusal("C-MOVE", calling_ae, exc), None
        return
    store_assoc: list[Any] = []

    def established(e: evt.Event) -> None:
        stream_stored_files(e.assoc)
        store_assoc.append(e.assoc)

    yield endpoint.host, endpoint.port, {"contexts": move_contexts(docs) or [build_context(VERIFICATION)],
                                         "evt_handlers": [(evt.EVT_ESTABLISHED, established)],
                                         "tls_args": tls_args, "move_destination": destination}
    log.info("C-MOVE", extra={"calling_ae": calling_ae, "destination": destination, "instances": len(docs),
                              "tls": endpoint.tls})
    yield len(docs)
    yield from _sub_operations(gateway, event, docs, lambda: store_assoc[0] if store_assoc else None)


def destination_tls(gateway: Any) -> Any:
    s = gateway.rt.settings
    return tls.client_context(s.dicom_tls_ca, s.dicom_tls_cert, s.dicom_tls_key)


class Unreachable:
    """Stands in for a C-MOVE destination association that did not open (refused, down, TLS failed).

    pynetdicom would answer 0xA801 Move Destination Unknown; but the destination is known.
    With this stand-in every C-STORE sub-operation fails, so the final response is 0xA702
    (Refused: Out of Resources - Unable to perform sub-operations) with the counts and the
    Failed SOP Instance UID List, as PS3.4 C.4.2 asks when no sub-operation succeeds.
    """

    is_established = True  # to pynetdicom's check only: nothing is sent on it

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def send_c_store(self, dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        raise ConnectionError(self.reason)

    def release(self) -> None:
        pass

    abort = release


def answer_for_unopened_destinations(ae: Any) -> None:
    """Let C-MOVE ask ``ae.associate`` for an :class:`Unreachable` instead of a failed association.

    Only calls with ``move_destination=`` (from :func:`handle_move`) are affected.
    """
    if getattr(ae, "_yilian_move_stand_in", False):
        return
    associate = ae.associate

    def associate_or_stand_in(addr: str, port: int, *args: Any, move_destination: str | None = None,
                              connect: bool = True, **kwargs: Any) -> Any:
        if move_destination is None:
            return associate(addr, port, *args, **kwargs)
        if not connect:
            return Unreachable("not opened: the request was refused")
        assoc = associate(addr, port, *args, **kwargs)
        if assoc.is_established:
            return assoc
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else (
            "TLS handshake failed or no connection" if kwargs.get("tls_args") else "no connection")
        log.error("C-MOVE destination association failed; its sub-operations fail", extra={
            "destination": move_destination, "host": addr, "port": port, "tls": bool(kwargs.get("tls_args")),
            "reason": why})
        return Unreachable(f"association with {move_destination} {why}")

    ae.associate = associate_or_stand_in
    ae._yilian_move_stand_in = True


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
    answer_for_unopened_destinations(ae)
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
