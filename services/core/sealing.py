"""Sealing (封存) a patient's images and reports: a frozen, hashed copy later changes cannot touch.

A seal copies every instance file of the patient's studies to ``sealed/<seal id>/...`` in the blob
store (checked against the SHA-256 the gateway recorded at receipt) and keeps a copy of every
report document in the seal record, with a manifest of SHA-256 digests (each instance, each
report) and the digest of the manifest itself.  Nothing writes to a seal's copy afterwards: a
re-sent instance, an addendum or a deletion changes the live records only.  While a seal is
active the patient's studies and reports cannot be deleted.  Unsealing is a state change of the
seal record, audited with its reason; the copy stays.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from . import audit
from .blobs.port import BlobStore
from .events import utc_now
from .store.port import Doc, Store

SEALS = "seals"
SEALED_PREFIX = "sealed/"  # blob keys of sealed copies (the gateway's sweeper leaves them alone)


class SealError(Exception):
    def __init__(self, status: int, detail: str, *, slug: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.slug = status, detail, slug


def sha256_of(doc: Doc) -> str:
    return hashlib.sha256(audit.canonical_json(doc)).hexdigest()


def manifest(seal_id: str, instances: list[Doc], reports: list[Doc]) -> dict[str, Any]:
    """What the seal holds, each part by its digest (pure)."""
    return {
        "instances": [{"sop_instance_uid": i["id"], "study_uid": i["study_uid"], "series_uid": i["series_uid"],
                       "sop_class_uid": i.get("sop_class_uid"), "size": i.get("size"), "sha256": i["sha256"],
                       "sealed_key": sealed_key(seal_id, i["blob_key"])}
                      for i in sorted(instances, key=lambda d: (d["study_uid"], d["series_uid"], d["id"]))],
        "reports": [{"id": r["id"], "study_uid": r.get("study_uid"), "sha256": sha256_of(r)}
                    for r in sorted(reports, key=lambda d: d["id"])],
    }


def sealed_key(seal_id: str, blob_key: str) -> str:
    return f"{SEALED_PREFIX}{seal_id}/{blob_key}"


async def patient_records(store: Store, organization: str, patient_id: str) -> tuple[list[Doc], list[Doc], list[Doc]]:
    """The patient's studies at ``organization``, their instances and their reports (addenda included)."""
    studies = await store.find("studies", {"organization": organization, "patient_id": patient_id})
    instances: list[Doc] = []
    reports: list[Doc] = []
    for study in studies:
        instances += await store.find("instances", {"study_uid": study["id"]})
        reports += await store.find("reports", {"study_uid": study["id"]})
    return studies, instances, reports


async def active_seal(store: Store, organization: str | None, patient_id: str | None) -> Doc | None:
    if not organization or not patient_id:
        return None
    found = await store.find(SEALS, {"organization": organization, "patient_id": patient_id, "state": "sealed"},
                             limit=1)
    return found[0] if found else None


async def seal(store: Store, blobs: BlobStore, *, organization: str, patient_id: str, reason: str,
               actor: str, role: str, remote: str | None) -> Doc:
    if await active_seal(store, organization, patient_id):
        raise SealError(409, f"patient {patient_id!r} of {organization!r} is already sealed", slug="sealed")
    studies, instances, reports = await patient_records(store, organization, patient_id)
    if not studies:
        raise SealError(404, f"no studies of patient {patient_id!r} at {organization!r}", slug="not-found")
    unfiled = [i["id"] for i in instances if not i.get("blob_key") or not i.get("sha256")]
    if unfiled:
        raise SealError(409, f"instances without a stored file yet (still being received?): {unfiled[:5]}",
                        slug="conflict")
    seal_id = f"seal-{uuid.uuid4().hex[:20]}"
    body = manifest(seal_id, instances, reports)
    copied: list[str] = []
    try:
        by_uid = {i["id"]: i for i in instances}
        for item in body["instances"]:
            source = by_uid[item["sop_instance_uid"]]
            info = await blobs.put_stream(item["sealed_key"], blobs.read_chunks(source["blob_key"]))
            copied.append(item["sealed_key"])
            if info.sha256 != item["sha256"]:
                raise SealError(409, f"instance {item['sop_instance_uid']}'s file no longer matches the SHA-256 "
                                     "recorded at receipt; not sealed", slug="integrity")
        doc = {"id": seal_id, "organization": organization, "patient_id": patient_id, "state": "sealed",
               "reason": reason, "sealed_at": utc_now(), "sealed_by": actor,
               "studies": sorted(s["id"] for s in studies), "manifest": body,
               "digest": hashlib.sha256(audit.canonical_json(body)).hexdigest(),
               "reports": {r["id"]: r for r in reports}}
        async with store.transaction() as tx:
            if await tx.find(SEALS, {"organization": organization, "patient_id": patient_id, "state": "sealed"},
                             limit=1):
                raise SealError(409, f"patient {patient_id!r} of {organization!r} was sealed meanwhile", slug="sealed")
            await tx.insert(SEALS, doc)
            await audit.record(tx, actor=actor, role=role, action="patient.seal", resource=f"seal/{seal_id}",
                               organization=organization, remote=remote,
                               detail={"patient_id": patient_id, "reason": reason, "digest": doc["digest"],
                                       "instances": len(body["instances"]), "reports": len(body["reports"])})
    except BaseException:
        for key in copied:  # a seal that did not commit leaves no copy
            await blobs.delete(key)
        raise
    return doc


async def unseal(store: Store, seal_id: str, *, reason: str, actor: str, role: str, remote: str | None) -> Doc:
    async with store.transaction() as tx:
        doc = await tx.get(SEALS, seal_id)
        if doc is None:
            raise SealError(404, f"no seal {seal_id!r}", slug="not-found")
        changes = {"state": "unsealed", "unsealed_at": utc_now(), "unsealed_by": actor, "unseal_reason": reason}
        if not await tx.update(SEALS, seal_id, changes, where={"state": "sealed"}):
            raise SealError(409, f"seal {seal_id!r} is not active (unsealed at {doc.get('unsealed_at')})",
                            slug="conflict")
        await audit.record(tx, actor=actor, role=role, action="patient.unseal", resource=f"seal/{seal_id}",
                           organization=doc["organization"], remote=remote,
                           detail={"patient_id": doc["patient_id"], "reason": reason, "digest": doc["digest"]})
    return {**doc, **changes}


async def verify(store: Store, blobs: BlobStore, doc: Doc) -> dict[str, Any]:
    """Re-hash the sealed copy (files and reports) against the manifest, and compare the live records.

    ``intact`` is about the copy; ``changed_since`` lists live records that differ from it now
    (expected after addenda or re-sends: the seal is what they were).
    """
    body = doc["manifest"]
    problems: list[str] = []
    if hashlib.sha256(audit.canonical_json(body)).hexdigest() != doc["digest"]:
        problems.append("the manifest does not match the seal's digest")
    for item in body["instances"]:
        digest = hashlib.sha256()
        try:
            async for chunk in blobs.read_chunks(item["sealed_key"]):
                digest.update(chunk)
        except KeyError:
            problems.append(f"sealed copy of instance {item['sop_instance_uid']} is missing")
            continue
        if digest.hexdigest() != item["sha256"]:
            problems.append(f"sealed copy of instance {item['sop_instance_uid']} was altered")
    for item in body["reports"]:
        copy = doc.get("reports", {}).get(item["id"])
        if copy is None or sha256_of(copy) != item["sha256"]:
            problems.append(f"sealed copy of report {item['id']} was altered or removed")
    changed: list[str] = []
    for item in body["instances"]:
        live = await store.get("instances", item["sop_instance_uid"])
        if live is None or live.get("sha256") != item["sha256"]:
            changed.append(f"instance/{item['sop_instance_uid']}")
    for item in body["reports"]:
        live = await store.get("reports", item["id"])
        if live is None or sha256_of(live) != item["sha256"]:
            changed.append(f"report/{item['id']}")
    return {"seal_id": doc["id"], "intact": not problems, "problems": problems, "digest": doc["digest"],
            "changed_since": changed}
