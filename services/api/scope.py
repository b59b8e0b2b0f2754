"""What a caller may see of the DICOM index, and the patient matching of 结果互认.

Reading requests and reports are scoped by ``services.workflow.policy``; studies here:

* clinic — the studies its organisation sent;
* reader, coordinator — the studies behind his centre's reading requests (any state) and
  the other studies of those studies' patients, from any site (priors); a reader also those
  of the consultations he is invited to (and their priors);
* admin — everything; auditor — nothing (he reads the audit log).

Same patient (:func:`same_patient`): the same organisation and Patient ID (0010,0020), or,
across organisations, the same Patient's Name (0010,0010, case-insensitive) *and* the same
Patient's Birth Date (0010,0030), both present.  A name alone or a birth date alone is
never enough, so a shared common name does not leak another clinic's patient.
"""

from __future__ import annotations

from typing import Any

from ..core.auth import Principal
from ..core.store.port import Filter, Store

Doc = dict[str, Any]


def same_patient(study: Doc) -> Filter:
    """The filter over ``studies`` matching every study of ``study``'s patient (itself included)."""
    alternatives: list[Filter] = [{"organization": study.get("organization"), "patient_id": study.get("patient_id")}]
    name_key = study.get("patient_name_key") or (study.get("patient_name") or "").upper()
    if name_key.strip("^ ") and study.get("birth_date"):
        alternatives.append({"patient_name_key": name_key, "birth_date": study["birth_date"]})
    if not study.get("patient_id"):
        alternatives = alternatives[1:] or [{"id": study["id"]}]
    return {"$or": alternatives}


async def patient_studies(store: Store, study: Doc, *, limit: int = 500) -> list[Doc]:
    """Every study of ``study``'s patient across the consortium (itself included), newest first."""
    return await store.find("studies", same_patient(study), sort=(("study_date", -1), ("id", 1)), limit=limit)


async def sees_study(store: Store, actor: Principal, study: Doc) -> bool:
    if actor.role == "admin":
        return True
    if actor.role == "clinic":
        return study.get("organization") == actor.organization
    if actor.role in ("reader", "coordinator") and actor.centre:
        uids = [s["id"] for s in await patient_studies(store, study)] or [study["id"]]
        if study["id"] not in uids:
            uids.append(study["id"])
        if await store.count("reading_requests", {"centre": actor.centre, "study_uid": {"$in": uids}}) > 0:
            return True
        return actor.role == "reader" and await _invited_to_patient(store, actor, set(uids))
    return False


async def _invited_to_patient(store: Store, actor: Principal, uids: set[str]) -> bool:
    """A specialist invited to a consultation (远程会诊) sees its attached studies and their priors."""
    for invitation in await store.find("consultation_invitations", {"specialist": actor.user_id}, limit=500):
        consultation = await store.get("consultations", invitation["consultation_id"])
        if consultation is not None and uids & set(consultation.get("study_uids") or ()):
            return True
    return False


async def visible_priors(store: Store, actor: Principal, study: Doc) -> list[Doc]:
    """The other studies of the patient the caller may see (a clinic: only its own)."""
    others = [s for s in await patient_studies(store, study) if s["id"] != study["id"]]
    if actor.role == "clinic":
        others = [s for s in others if s.get("organization") == actor.organization]
    return others
