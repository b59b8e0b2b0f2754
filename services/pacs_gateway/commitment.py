"""Storage Commitment Push Model SCP (PS3.4 Annex J): N-ACTION in, N-EVENT-REPORT out.

A modality asks (N-ACTION, action type 1) whether the gateway has taken responsibility
for instances it sent.  The request is answered at once; the verdict follows in an
N-EVENT-REPORT on a **new association** that the gateway opens to the requestor (the
asynchronous mode every PACS supports): to the calling AE itself when it is registered
as an ``scp`` in the consortium, else to its organisation's ``scp``.  On that
association the gateway proposes the Storage Commitment SOP class with the SCP role
(SCP/SCU Role Selection).

An instance is committed when the index has it (within the caller's scope, with the
SOP class the caller names) and its file is in the blob store; the index is written
only after the file is durable, so that is a promise kept across a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import build_context, build_role, evt

from ..core.blobs.port import BlobStore
from ..core.store.port import Store
from . import query as q

log = logging.getLogger("yilian.pacs_gateway.commitment")

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP Instance
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type ID of the N-EVENT-REPORT

# Failure Reason (0008,1197) values, PS3.4 J.3.2.1.
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
# N-ACTION response statuses, PS3.7 10.1.4.1.10.
NO_SUCH_ACTION = 0x0123
MISSING_ATTRIBUTE = 0x0120
INVALID_ATTRIBUTE_VALUE = 0x0106

REPORT_ATTEMPTS = (0.0, 2.0, 10.0)  # seconds before each try to deliver the report
RELEASE_WAIT = 5.0  # let the requestor release its N-ACTION association first


async def verdicts(store: Store, blobs: BlobStore, requested: list[tuple[str, str]],
                   organizations: list[str]) -> list[tuple[str, str, int | None]]:
    """``(sop_class, sop_instance, failure_reason or None)`` for each requested instance."""
    uids = sorted({uid for _, uid in requested})
    docs = {d["id"]: d for d in await store.find("instances", {"id": {"$in": uids},
                                                                "organization": {"$in": organizations}})} \
        if uids and organizations else {}
    out = []
    for sop_class, uid in requested:
        doc = docs.get(uid)
        if doc is None:
            out.append((sop_class, uid, NO_SUCH_OBJECT_INSTANCE))
        elif doc.get("sop_class_uid") != sop_class:
            out.append((sop_class, uid, CLASS_INSTANCE_CONFLICT))
        elif not await blobs.exists(doc["blob_key"]):
            out.append((sop_class, uid, PROCESSING_FAILURE))
        else:
            out.append((sop_class, uid, None))
    return out


def event_information(transaction_uid: str, results: list[tuple[str, str, int | None]],
                      retrieve_ae: str) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT's Event Type ID and Event Information (PS3.4 J.3.3.1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    committed, failed = [], []
    for sop_class, uid, reason in results:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = uid
        if reason is None:
            committed.append(item)
        else:
            item.FailureReason = reason
            failed.append(item)
    if committed:
        ds.RetrieveAETitle = retrieve_ae
        ds.ReferencedSOPSequence = committed
    if failed:
        ds.FailedSOPSequence = failed
    return (SOME_FAILED if failed else ALL_COMMITTED), ds


def _status(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def handle_n_action(gateway: Any, event: evt.Event) -> tuple[Any, Dataset | None]:
    """EVT_N_ACTION: check the request, answer at once, report on another thread."""
    calling_ae = event.assoc.requestor.ae_title.strip()
    if event.request.RequestedSOPClassUID != STORAGE_COMMITMENT_PUSH_MODEL:
        return _status(NO_SUCH_ACTION, "only Storage Commitment Push Model"), None
    if event.action_type != REQUEST_STORAGE_COMMITMENT:
        return _status(NO_SUCH_ACTION, f"no such action type {event.action_type}"), None
    try:
        info = event.action_information
        transaction_uid = str(info.get("TransactionUID") or "").strip()
        refs = info.get("ReferencedSOPSequence") or []
        requested = [(str(i.ReferencedSOPClassUID).strip(), str(i.ReferencedSOPInstanceUID).strip()) for i in refs]
    except Exception as exc:
        return _status(INVALID_ATTRIBUTE_VALUE, f"unreadable action information: {type(exc).__name__}"), None
    if not transaction_uid or not requested:
        return _status(MISSING_ATTRIBUTE, "Transaction UID and Referenced SOP Sequence required"), None
    destination = gateway.rt.consortium.endpoint(calling_ae)
    org = q.organization_id(gateway.organization_for(calling_ae))
    if destination is None and org is not None:
        destination = gateway.rt.consortium.organizations[org].scp
    if destination is None:
        return _status(PROCESSING_FAILURE, "no registered SCP to send the report to"), None
    log.info("storage commitment requested", extra={"calling_ae": calling_ae, "transaction_uid": transaction_uid,
                                                    "instances": len(requested),
                                                    "report_to": destination.ae_title})
    threading.Thread(target=_report, name=f"commitment-{transaction_uid[-12:]}", daemon=True,
                     args=(gateway, event.assoc, calling_ae, org, destination, transaction_uid, requested)).start()
    return 0x0000, None


def _report(gateway: Any, assoc: Any, calling_ae: str, org: str | None, destination: Any,
            transaction_uid: str, requested: list[tuple[str, str]]) -> None:
    deadline = time.monotonic() + RELEASE_WAIT
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    organizations = q.visible_organizations(gateway.rt.consortium, org)
    try:
        results = gateway.call(verdicts(gateway.rt.store, gateway.rt.blobs, requested, organizations), timeout=60)
    except Exception:
        log.exception("storage commitment check failed", extra={"transaction_uid": transaction_uid})
        results = [(c, u, PROCESSING_FAILURE) for c, u in requested]
    event_type, info = event_information(transaction_uid, results, str(gateway.ae.ae_title).strip())
    failed = sum(1 for *_, r in results if r is not None)
    for pause in REPORT_ATTEMPTS:
        time.sleep(pause)
        report = gateway.ae.associate(
            destination.host, destination.port, ae_title=destination.ae_title,
            contexts=[build_context(STORAGE_COMMITMENT_PUSH_MODEL)],
            ext_neg=[build_role(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=False, scp_role=True)])
        if not report.is_established:
            continue
        try:
            status, _ = report.send_n_event_report(info, event_type, STORAGE_COMMITMENT_PUSH_MODEL,
                                                   STORAGE_COMMITMENT_INSTANCE)
        finally:
            report.release()
        if status is not None and "Status" in status and status.Status == 0x0000:
            log.info("storage commitment reported", extra={
                "calling_ae": calling_ae, "transaction_uid": transaction_uid, "committed": len(results) - failed,
                "failed": failed, "report_to": destination.ae_title})
            return
    log.error("storage commitment report not delivered", extra={
        "calling_ae": calling_ae, "transaction_uid": transaction_uid, "report_to": destination.ae_title})


def install(gateway: Any) -> list[tuple[Any, Any]]:
    # The requestor is the SCU (N-ACTION); the report goes out on our own association.
    gateway.ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL)
    return [(evt.EVT_N_ACTION, lambda event: handle_n_action(gateway, event))]
