"""Storage Commitment Push Model SCP (PS3.4 Annex J): N-ACTION in, N-EVENT-REPORT out.

A modality asks (N-ACTION, action type 1) whether the gateway has taken responsibility
for instances it sent.  The request is recorded in the store (``storage_commitments``, one
document per Transaction UID) before it is answered, so a stop or crash cannot lose it;
``commitment_sender.py`` sends the verdict later in an N-EVENT-REPORT on a **new
association** to the requestor (the asynchronous mode every PACS supports): to the calling
AE itself when it is registered as an ``scp`` in the consortium, else to its organisation's
``scp``.  On that association the gateway proposes the Storage Commitment SOP class with
the SCP role (SCP/SCU Role Selection).

An instance is committed when the index has it (within the caller's scope, with the
SOP class the caller names) and its file is in the blob store; the index is written
only after the file is durable, so that is a promise kept across a crash.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from ..core.blobs.port import BlobStore
from ..core.store.port import Store
from ..core.times import iso
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

COMMITMENTS = "storage_commitments"  # pending and answered requests, id = Transaction UID


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


def report_destination(consortium: Any, calling_ae: str, organization: str | None) -> Any:
    """Where the N-EVENT-REPORT goes: the calling AE when it is a registered ``scp``, else its
    organisation's ``scp``; None when neither exists."""
    destination = consortium.endpoint(calling_ae)
    if destination is None and organization is not None and organization in consortium.organizations:
        destination = consortium.organizations[organization].scp
    return destination


def new_request(transaction_uid: str, *, calling_ae: str, organization: str | None, destination: Any,
                requested: list[tuple[str, str]], at: str) -> dict[str, Any]:
    """The pending-commitment document (collection ``storage_commitments``, id = Transaction UID)."""
    return {"id": transaction_uid, "calling_ae": calling_ae, "organization": organization,
            "report_to": {"ae_title": destination.ae_title, "host": destination.host, "port": destination.port},
            "requested": [{"sop_class_uid": c, "sop_instance_uid": u} for c, u in requested],
            "state": "pending", "attempts": 0, "requested_at": at, "next_attempt_at": at,
            "lease_expires_at": None, "worker": None, "version": 1, "last_error": None, "reported_at": None}


async def record_request(store: Store, doc: dict[str, Any]) -> str | None:
    """Make the request durable; an error comment if the Transaction UID belongs to another AE.

    The same AE asking again under the same Transaction UID (it got no report) starts over:
    the report is computed and sent again.
    """
    async with store.transaction() as tx:
        old = await tx.get(COMMITMENTS, doc["id"])
        if old is not None and old["calling_ae"] != doc["calling_ae"]:
            return "Transaction UID already used by another AE"
        if old is not None:
            doc = {**doc, "version": old["version"] + 1}
        await tx.put(COMMITMENTS, doc)
    return None


def handle_n_action(gateway: Any, event: evt.Event) -> tuple[Any, Dataset | None]:
    """EVT_N_ACTION: check the request, record it durably, answer; the sender reports later."""
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
    org = q.organization_id(gateway.organization_for(calling_ae))
    destination = report_destination(gateway.rt.consortium, calling_ae, org)
    if destination is None:
        return _status(PROCESSING_FAILURE, "no registered SCP to send the report to"), None
    doc = new_request(transaction_uid, calling_ae=calling_ae, organization=org, destination=destination,
                      requested=requested, at=iso(time.time()))
    # Durable before the N-ACTION response: a crash after "success" must not lose the report.
    try:
        conflict = gateway.call(record_request(gateway.rt.store, doc), timeout=30)
    except Exception as exc:
        log.exception("storage commitment request not recorded", extra={"transaction_uid": transaction_uid})
        return _status(PROCESSING_FAILURE, f"request not recorded: {type(exc).__name__}"), None
    if conflict:
        return _status(INVALID_ATTRIBUTE_VALUE, conflict), None
    log.info("storage commitment requested", extra={"calling_ae": calling_ae, "transaction_uid": transaction_uid,
                                                    "instances": len(requested),
                                                    "report_to": destination.ae_title})
    sender = getattr(gateway, "commitments", None)
    if sender is not None:  # this process reports; other processes find it by polling
        sender.requested(transaction_uid, event.assoc)
    return 0x0000, None


def install(gateway: Any) -> list[tuple[Any, Any]]:
    # The requestor is the SCU (N-ACTION); the report goes out on our own association.
    gateway.ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL)
    return [(evt.EVT_N_ACTION, lambda event: handle_n_action(gateway, event))]
