"""``yilian identity backfill``: the consortium identity of studies indexed before it existed.

For each study without an ``identity`` (docs/identity.md), the stored headers of a few of its
instances are read back (header only, from the blob store) until one carries a valid national
identifier (``model.identifiers``, ``identity.first_key``: what indexing reads); the study and
its local patient get it as indexing would have set it (a field set once, never overwritten).
Idempotent: a study that has one is left alone, so a second run finds nothing to do.  Nothing
of the identifier goes to the output, a log line or the audit record (counts only).
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import asdict, dataclass
from pydicom import dcmread

from ..core import audit, identity
from ..core.blobs.port import BlobStore
from ..core.store.port import Store
from . import model

log = logging.getLogger("yilian.identity")

PAGE = 200
ACTOR = "system:identity-backfill"


@dataclass
class Backfilled:
    studies_without: int = 0  # studies that had no identity when read
    studies_filled: int = 0
    patients_filled: int = 0
    unreadable: int = 0  # instances whose stored file could not be read (missing blob, not DICOM)


def _identity_in(data: bytes, issuers: identity.Issuers) -> str:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return identity.first_key(model.identifiers(ds), issuers)


async def _identity_of(store: Store, blobs: BlobStore, study_uid: str, tries: int, counts: Backfilled,
                       issuers: identity.Issuers) -> str:
    for inst in await store.find("instances", {"study_uid": study_uid}, sort=(("id", 1),), limit=tries):
        try:
            found = await asyncio.to_thread(_identity_in, await blobs.read(inst["blob_key"]), issuers)
        except Exception:  # noqa: BLE001 - one bad file must not stop the run: it is counted and said
            counts.unreadable += 1
            log.warning("stored instance not readable for the identity backfill", extra={"study_uid": study_uid,
                                                                                         "blob_key": inst.get("blob_key")})
            continue
        if found:
            return found
    return ""


async def backfill_identity(store: Store, blobs: BlobStore, *, issuers: identity.Issuers = identity.ISSUERS,
                            tries: int = 3) -> Backfilled:
    """Fill ``identity`` on studies (and their local patients) that have none; the counts.  ``issuers``:
    the consortium's accepted national identifiers (``Consortium.identity_issuers``)."""
    counts = Backfilled()
    offset = 0
    while page := await store.find("studies", {}, sort=(("id", 1),), limit=PAGE, offset=offset):
        offset += len(page)
        for study in page:
            if study.get("identity"):
                continue
            counts.studies_without += 1
            found = await _identity_of(store, blobs, study["id"], tries, counts, issuers)
            if not found:
                continue
            async with store.transaction() as tx:
                current = await tx.get("studies", study["id"])
                if current is None or current.get("identity"):
                    continue  # indexed meanwhile (or deleted): the gateway's own value stands
                await tx.update("studies", study["id"], {"identity": found})
                counts.studies_filled += 1
                if study.get("patient_id"):
                    key = model.patient_id_of(study["organization"], study["patient_id"])
                    patient = await tx.get("patients", key)
                    if patient is not None and not patient.get("identity"):
                        await tx.update("patients", key, {"identity": found})
                        counts.patients_filled += 1
    async with store.transaction() as tx:
        await audit.record(tx, actor=ACTOR, role="system", action="identity.backfill", resource="studies",
                           detail=asdict(counts))
    log.info("identity backfill done", extra=asdict(counts))
    return counts

