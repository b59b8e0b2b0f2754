"""What a caller may see of the DICOM index, and the patient matching of 结果互认.

Reading requests and reports are scoped by ``services.workflow.policy``; studies here:

* clinic — the studies its organisation sent, and those attached to a referral (双向转诊) sent
  to its organisation while the referral stands;
* reader, coordinator — the studies behind his centre's reading requests (any state) and
  the other studies of those studies' patients, from any site (priors); a reader also those
  of the consultations he is invited to (and their priors);
* admin — everything; auditor — nothing (he reads the audit log).

Same patient (:func:`same_patient`, docs/identity.md): the same organisation and Patient ID
(0010,0020); or, across organisations, the same consortium identity (``identity``: a valid
resident ID or another configured national identifier, with its issuer, from Other Patient IDs
Sequence or the order); or a link a coordinator or admin confirmed (``identity_links``).  Name +
birth date never match: they only *suggest* a link (:mod:`.routes.identity`), so two patients
with the same name and birth date at two townships never share priors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core import identity
from ..core.auth import Principal
from ..core.store.port import Filter, Store

Doc = dict[str, Any]


def patient_key(study: Doc) -> str:
    """The local patient of a study: ``organization|Patient ID`` (the ``patients`` document's id)."""
    return f"{study.get('organization') or ''}|{study.get('patient_id') or ''}"


def same_patient(study: Doc, linked: Iterable[str] = ()) -> Filter:
    """The filter over ``studies`` matching every study of ``study``'s patient (itself included);
    ``linked``: the local patients (``organization|Patient ID``) confirmed to be the same person."""
    alternatives: list[Filter] = []
    if study.get("patient_id"):
        alternatives.append({"organization": study.get("organization"), "patient_id": study.get("patient_id")})
    if study.get("identity"):
        alternatives.append({"identity": study["identity"]})
    for other in linked:
        organization, _, patient_id = other.partition("|")
        if patient_id:
            alternatives.append({"organization": organization, "patient_id": patient_id})
    return {"$or": alternatives or [{"id": study["id"]}]}


async def linked_patients(store: Store, study: Doc) -> list[str]:
    """The local patients a person confirmed to be ``study``'s patient (one hop, both ways)."""
    if not study.get("patient_id"):
        return []
    return [link["linked"] for link in await store.find("identity_links", {"patient": patient_key(study)}, limit=100)]


async def patient_studies(store: Store, study: Doc, *, limit: int = 500) -> list[Doc]:
    """Every study of ``study``'s patient across the consortium (itself included), newest first."""
    where = same_patient(study, await linked_patients(store, study))
    return await store.find("studies", where, sort=(("study_date", -1), ("id", 1)), limit=limit)


async def sees_study(store: Store, actor: Principal, study: Doc) -> bool:
    if actor.role == "admin":
        return True
    if actor.role == "clinic":
        return study.get("organization") == actor.organization or await _referred_to(store, actor, study)
    if actor.role in ("reader", "coordinator") and actor.centre:
        uids = [s["id"] for s in await patient_studies(store, study)] or [study["id"]]
        if study["id"] not in uids:
            uids.append(study["id"])
        if await store.count("reading_requests", {"centre": actor.centre_where(), "study_uid": {"$in": uids}}) > 0:
            return True
        return actor.role == "reader" and await _invited_to_patient(store, actor, set(uids))
    return False


async def _referred_to(store: Store, actor: Principal, study: Doc) -> bool:
    """The hospital a referral (双向转诊) sends the patient to sees the studies attached to it while
    the referral stands (not refused or cancelled): docs/referral.md."""
    for link in await store.find("referral_studies", {"study_uid": study["id"],
                                                      "target_organization": actor.organization}, limit=20):
        referral = await store.get("referrals", link["referral_id"])
        if referral is not None and referral["state"] not in ("refused", "cancelled"):
            return True
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


UNMASKED_ROLES = frozenset({"admin"})  # resolves identity links against the national register (docs/identity.md)


def shown(doc: Doc, actor: Principal) -> Doc:
    """A study or patient document as an API answer shows it: the consortium identity (a resident
    ID is patient data) masked, ``CN_RESIDENT_ID|4101**********1234``, except for an admin."""
    if not doc.get("identity") or actor.role in UNMASKED_ROLES:
        return doc
    return {**doc, "identity": identity.masked_key(doc["identity"])}
