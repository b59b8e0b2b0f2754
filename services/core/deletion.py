"""Deleting a study's images or a report: only after its retention period, never while sealed.

The checks and the deletion run in one store transaction with the audit record, so a record
that gains activity or a seal meanwhile is not deleted.  A study's files are removed after the
commit (a file left behind by a crash is an unreferenced blob, which the gateway's sweeper
removes).  Refusals raise :class:`Refused`; the caller audits them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import audit
from .blobs.port import BlobStore
from .consortium import RetentionConfig
from .retention import Retention, longest_class, retention_of
from .sealing import SEALS
from .store.port import Doc, Transaction


class Refused(Exception):
    def __init__(self, status: int, detail: str, *, slug: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.slug, self.extensions = status, detail, slug, extensions


async def _sealed(tx: Transaction, study: Doc | None) -> Doc | None:
    if study is None or not study.get("patient_id"):
        return None
    found = await tx.find(SEALS, {"organization": study.get("organization"), "patient_id": study["patient_id"],
                                  "state": "sealed"}, limit=1)
    return found[0] if found else None


def _check(what: str, retention: Retention, seal: Doc | None, now: datetime) -> None:
    if seal is not None:
        raise Refused(409, f"{what} belongs to a sealed patient (seal {seal['id']}); unseal first",
                      slug="sealed", seal_id=seal["id"])
    if not retention.expired(now):
        raise Refused(409, f"{what} is kept until {retention.retained_until} ({retention.record_class}: "
                           f"{retention.years} years from its last activity {retention.last_activity})",
                      slug="retention-period", retention=retention.to_dict())


async def _study_activity(tx: Transaction, study: Doc) -> list[Doc]:
    uid = study["id"]
    return [study, *await tx.find("reading_requests", {"study_uid": uid}),
            *await tx.find("reports", {"study_uid": uid}), *await tx.find("results", {"study_uid": uid})]


async def delete_study(store: Any, blobs: BlobStore, config: RetentionConfig, study_uid: str, *, now: datetime,
                       actor: str, role: str, remote: str | None) -> dict[str, Any]:
    async with store.transaction() as tx:
        study = await tx.get("studies", study_uid)
        if study is None:
            raise Refused(404, f"no study {study_uid!r}", slug="not-found")
        activity = await _study_activity(tx, study)
        # The modality's word (Admission ID), else its requests' and reports' (the order's, the clinic's).
        record_class = study.get("record_class") or longest_class(config, (d.get("record_class") for d in activity))
        retention = retention_of(config, record_class, activity, now=now)
        _check(f"study {study_uid}", retention, await _sealed(tx, study), now)
        instances = await tx.find("instances", {"study_uid": study_uid})
        for doc in instances:
            await tx.delete("instances", doc["id"])
        for doc in await tx.find("series", {"study_uid": study_uid}):
            await tx.delete("series", doc["id"])
        await tx.delete("studies", study_uid)
        patient_key = f"{study.get('organization')}|{study.get('patient_id')}"
        patient = await tx.get("patients", patient_key)
        if patient is not None:
            await tx.update("patients", patient_key, {"study_count": max(0, patient.get("study_count", 1) - 1)})
        await audit.record(tx, actor=actor, role=role, action="study.delete", resource=f"study/{study_uid}",
                           organization=study.get("organization"), remote=remote,
                           detail={"retention": retention.to_dict(), "instances": len(instances)})
    for doc in instances:
        if doc.get("blob_key"):
            await blobs.delete(doc["blob_key"])
    return {"deleted": f"study/{study_uid}", "instances": len(instances), "retention": retention.to_dict()}


async def delete_report(store: Any, config: RetentionConfig, report_id: str, *, now: datetime,
                        actor: str, role: str, remote: str | None) -> dict[str, Any]:
    async with store.transaction() as tx:
        report = await tx.get("reports", report_id)
        if report is None:
            raise Refused(404, f"no report {report_id!r}", slug="not-found")
        study = await tx.get("studies", report["study_uid"]) if report.get("study_uid") else None
        addenda = [await tx.get("reports", rid) for rid in report.get("addenda", [])]
        record_class = report.get("record_class") or (study or {}).get("record_class")
        retention = retention_of(config, record_class, [report, *(a for a in addenda if a)], now=now)
        _check(f"report {report_id}", retention, await _sealed(tx, study), now)
        await tx.delete("reports", report_id)
        await audit.record(tx, actor=actor, role=role, action="report.delete", resource=f"report/{report_id}",
                           organization=report.get("organization"), remote=remote,
                           detail={"retention": retention.to_dict(), "study_uid": report.get("study_uid")})
    return {"deleted": f"report/{report_id}", "retention": retention.to_dict()}
