"""Result mutual recognition (结果互认, 医疗机构检查检验结果互认管理办法, 2022): the gate.

The consortium's catalogue (``recognition.items`` of the consortium file) names the recognised
exam items: a modality, optionally a body part, a validity period and the mark to print.  When
a clinic orders an exam or requests a reading for a patient who has a still-valid result of
the same item at any member (by the same-patient rule: the same organisation and Patient ID,
or the same consortium identity), the request is held: 409 ``recognised-result`` with the
prior(s), and it proceeds only with an exception reason code from the national list
(:data:`EXCEPTIONS`).  The decision is recorded (``recognition_decisions``) and emitted
(``recognition.decided``); using the prior instead is recorded through the API (a repeat
avoided).

What is recognised is the *examination* (the images and their technical result), not the
doctor's conclusion: a prior shows both, each marked (``recognised: true`` / ``false``).
Matching and validity are pure (:func:`item_for`, :func:`valid_until`); :func:`priors` reads.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from ..core import identity
from ..core.auth import Principal
from ..core.consortium import Consortium, RecognisedItem
from ..core.events import new_traceparent
from ..core.localtime import LocalTime
from ..core.runtime import Runtime
from ..core.store.port import Store, Transaction
from .context import CommandContext, settings_of
from .errors import Conflict, Forbidden, Invalid, NotFound

DECISIONS = "recognition_decisions"

# The national list of reasons to repeat a recognisable exam (管理办法 第十八条), short codes.
EXCEPTIONS = {
    "condition_changed": "因病情变化，已有结果难以提供参考价值 (condition changed)",
    "key_time_point": "诊疗关键时间节点，如手术前、出院前 (key time point)",
    "rapidly_changing": "与疾病发展关联程度高、变化幅度大的项目 (rapidly changing)",
    "inconsistent_with_clinical": "检查结果与临床表现不相符 (inconsistent with the clinical picture)",
    "result_unclear": "已有结果不清晰或质量不符合要求 (result unclear)",
    "emergency": "急诊、急救等抢救生命的紧急状态 (emergency)",
    "patient_request": "患者充分知情并要求复查 (patient's request)",
    "forensic": "涉及司法、伤残及病退等鉴定 (forensic assessment)",
    "other": "其他情形，需说明 (other: comment required)",
}

Doc = dict[str, Any]


class RecognisedPrior(Conflict):
    """409 ``recognised-result``: the request is held for a reason code; ``extensions`` carries the priors."""

    def __init__(self, message: str, extensions: Doc) -> None:
        super().__init__(message)
        self.extensions = extensions
        self.slug = "recognised-result"


def item_for(consortium: Consortium, modality: str | None, body_part: str | None) -> RecognisedItem | None:
    """The catalogue item of an exam (its modality, and body part when the item names one)."""
    for item in consortium.recognition:
        if item.modality == (modality or "").upper() and (
                item.body_part is None or item.body_part == (body_part or "").strip().upper()):
            return item
    return None


def valid_until(study_date: str | None, item: RecognisedItem) -> str | None:
    """The last local day a result of ``study_date`` (DICOM DA) is recognised, or None if undated."""
    if not study_date or len(study_date) != 8 or not study_date.isdigit():
        return None
    day = date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:]))
    return (day + timedelta(days=item.validity_days)).isoformat()


async def body_part_of(tx: Transaction | Store, study: Doc) -> str | None:
    if study.get("body_part"):
        return study["body_part"]
    for series in await tx.find("series", {"study_uid": study["id"]}, limit=50):
        if series.get("body_part"):
            return series["body_part"]
    return None


async def priors(tx: Transaction | Store, consortium: Consortium, *, organization: str, patient_id: str | None,
                 identity: str | None, modality: str | None, body_part: str | None, now: float,
                 exclude: tuple[str, ...] = ()) -> tuple[RecognisedItem | None, list[Doc]]:
    """The item of this exam and the patient's still-valid recognised results of it, newest first."""
    item = item_for(consortium, modality, body_part)
    if item is None:
        return None, []
    alternatives: list[Doc] = []
    if patient_id:
        alternatives.append({"organization": organization, "patient_id": patient_id})
    if identity:
        alternatives.append({"identity": identity})
    if not alternatives:
        return item, []
    today = LocalTime.named(consortium.timezone).local(now).date().isoformat()
    found = []
    for study in await tx.find("studies", {"$or": alternatives}, sort=(("study_date", -1), ("id", 1)), limit=200):
        if study["id"] in exclude or item.modality not in (study.get("modalities") or []):
            continue
        if item.body_part and (await body_part_of(tx, study) or "").upper() != item.body_part:
            continue
        until = valid_until(study.get("study_date"), item)
        if until is None or until < today:
            continue
        found.append(await _view(tx, consortium, study, item, until))
    return item, found


async def _view(tx: Transaction | Store, consortium: Consortium, study: Doc, item: RecognisedItem, until: str) -> Doc:
    """A prior: the recognised examination, and the doctor's conclusion beside it (not recognised)."""
    org = consortium.organizations.get(study.get("organization") or "")
    reports = await tx.find("reports", {"study_uid": study["id"]}, sort=(("signed_at", -1),), limit=1)
    report = reports[0] if reports else None
    return {
        "study_uid": study["id"], "organization": study.get("organization"),
        "organization_name": org.name if org else None, "study_date": study.get("study_date"),
        "valid_until": until, "item": item.id, "item_name": item.name, "mark": item.mark,
        "examination": {"recognised": True, "label": "检查结果（互认）examination — recognised",
                        "modalities": study.get("modalities"), "study_description": study.get("study_description"),
                        "accession_number": study.get("accession_number")},
        "conclusion": None if report is None else {
            "recognised": False, "label": "诊断结论（仅供参考，不在互认范围）doctor's conclusion — not recognised",
            "report_id": report["id"], "impression": report.get("impression"), "reader_name": report.get("reader_name"),
            "signed_at": report.get("signed_at")},
    }


def reason_of(value: Any) -> Doc:
    """A repeat's exception: ``{"reason": code, "comment"?}`` (a comment is required for ``other``)."""
    if not isinstance(value, dict) or value.get("reason") not in EXCEPTIONS:
        raise Invalid(f"recognition.reason must be one of {', '.join(EXCEPTIONS)}")
    comment = value.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 2000):
        raise Invalid("recognition.comment must be a string of at most 2000 characters")
    if value["reason"] == "other" and not (comment or "").strip():
        raise Invalid("recognition.reason 'other' needs a comment")
    return {"reason": value["reason"], "comment": (comment or "").strip() or None}


async def gate(ctx: CommandContext, *, subject: str, organization: str, patient_id: str | None,
               identity: str | None, modality: str | None, body_part: str | None, recognition: Any,
               exclude: tuple[str, ...] = ()) -> Doc | None:
    """Hold the request if a still-valid recognised result exists and no exception is given (409 with
    the priors); with one, record the decision ("repeat") and return it.  None: nothing to recognise."""
    item, found = await priors(ctx.tx, ctx.rt.consortium, organization=organization, patient_id=patient_id,
                               identity=identity, modality=modality, body_part=body_part, now=ctx.now,
                               exclude=exclude)
    if not found:
        return None
    assert item is not None
    if recognition is None:
        first = found[0]
        raise RecognisedPrior(
            f"a recognised result of {item.name} ({item.id}) is still valid until {first['valid_until']}: study "
            f"{first['study_uid']} of {first['study_date']} at {first['organization_name']}; use it, or give "
            "recognition.reason (one of the national exceptions) to repeat the exam",
            {"item": {"id": item.id, "name": item.name, "mark": item.mark, "validity_days": item.validity_days},
             "priors": found, "reasons": EXCEPTIONS})
    why = reason_of(recognition)
    return await record(ctx, decision="repeat", item=item, prior=found[0], subject=subject, organization=organization,
                        patient_id=patient_id, identity=identity, **why)


async def record(ctx: CommandContext, *, decision: str, item: RecognisedItem, prior: Doc, subject: str | None,
                 organization: str, patient_id: str | None, identity: str | None, reason: str | None = None,
                 comment: str | None = None) -> Doc:
    doc = {"id": f"rd-{uuid.uuid4().hex[:20]}", "decision": decision, "item": item.id, "reason": reason,
           "comment": comment, "prior_study_uid": prior["study_uid"], "prior_organization": prior["organization"],
           "subject": subject, "organization": organization, "patient_id": patient_id, "identity": identity,
           "by": ctx.actor.user_id, "at": ctx.at}
    await ctx.tx.insert(DECISIONS, doc)
    ctx.emit("recognition.decided", doc["id"], {k: doc[k] for k in (
        "decision", "item", "reason", "prior_study_uid", "prior_organization", "subject", "organization",
        "patient_id", "at")} | {"decision_id": doc["id"], "actor": ctx.actor.user_id})
    await ctx.record(f"recognition.{decision}", f"recognition/{doc['id']}", organization, item=item.id,
                     reason=reason, prior_study_uid=prior["study_uid"], subject=subject)
    return doc


# --- the clinic's side: look before ordering, and use the prior (a repeat avoided) --------------

def _identity_of(resident_id: Any) -> str | None:
    if resident_id is None:
        return None
    why = identity.problem(resident_id) if isinstance(resident_id, str) else "must be a string"
    if why:  # the number itself is never repeated (errors reach the audit log)
        raise Invalid(f"resident_id (居民身份证号) {why}")
    return identity.key(identity.ISSUER, identity.normalized(resident_id))


async def check(rt: Runtime, actor: Principal, *, patient_id: Any, resident_id: Any, modality: Any,
                body_part: Any) -> Doc:
    """The item of an exam and the patient's still-valid recognised results of it (no change)."""
    if actor.role != "clinic":
        raise Forbidden("a clinic looks up recognised results for its patients")
    if not isinstance(patient_id, str) or not patient_id.strip():
        raise Invalid("patient_id must name the clinic's patient")
    item, found = await priors(rt.store, rt.consortium, organization=actor.organization, patient_id=patient_id,
                               identity=_identity_of(resident_id), modality=modality, body_part=body_part,
                               now=settings_of(rt).now())
    return {"item": None if item is None else {"id": item.id, "name": item.name, "mark": item.mark,
                                                "validity_days": item.validity_days},
            "priors": found, "reasons": EXCEPTIONS}


async def use_prior(rt: Runtime, actor: Principal, *, patient_id: Any, resident_id: Any, modality: Any,
                    body_part: Any, prior_study_uid: Any, remote: str | None = None) -> Doc:
    """The clinic uses a still-valid recognised result instead of repeating the exam: recorded."""
    if actor.role != "clinic":
        raise Forbidden("a clinic records the use of a recognised result")
    async with rt.store.transaction() as tx:
        ctx = CommandContext(rt, tx, actor, remote, settings_of(rt).now(), new_traceparent())
        identity_key = _identity_of(resident_id)
        item, found = await priors(tx, rt.consortium, organization=actor.organization, patient_id=patient_id,
                                   identity=identity_key, modality=modality, body_part=body_part, now=ctx.now)
        prior = next((p for p in found if p["study_uid"] == prior_study_uid), None)
        if item is None or prior is None:
            raise NotFound(f"no still-valid recognised result {prior_study_uid!r} of this patient and exam")
        return await record(ctx, decision="use_prior", item=item, prior=prior, subject=None,
                            organization=actor.organization, patient_id=patient_id, identity=identity_key)
