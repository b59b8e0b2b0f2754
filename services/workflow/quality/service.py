"""Command handlers of image quality grading and peer review (docs/quality.md).

They run through the workflow's one :func:`services.workflow.service.execute` (role, scope,
one transaction with the event and the audit record).  Grading writes the latest grade of a
reading (``quality_gradings``, id = reading request id) and ``study.quality_graded``; a reject
grade (废片) continues into the existing return-for-re-scan flow.  A released report may be
sampled for peer review (``peer_reviews``, id ``pr-<report id>``: one review per report).
"""

from __future__ import annotations

from typing import Any

from ...core.consortium import Consortium
from .. import commands as c
from .. import model as workflow_model
from ..errors import Conflict, Forbidden, IllegalTransition, Invalid, NotFound
from ..service import RR, _apply, _check_holder, _Ctx, _text, _user_name, _visible_request
from ..service import return_for_rescan, write_addendum
from . import model

GRADINGS = "quality_gradings"
REVIEWS = "peer_reviews"
Doc = dict[str, Any]


def reject_code(consortium: Consortium) -> str:
    return next(g.code for g in consortium.quality.scale if g.reject)


# --- grading ----------------------------------------------------------------------------

async def _grade_command(ctx: _Ctx, cmd: c.GradeQuality) -> Doc:
    doc = await _visible_request(ctx, cmd.request_id, "grade")
    if doc["state"] in workflow_model.HELD_STATES:
        _check_holder(ctx, doc, "grade")
    else:
        workflow_model.require(doc["state"], "grade")
        if ctx.actor.user_id not in (doc.get("signed_by"), doc.get("submitted_by")):
            raise Forbidden("after signing, only the report's reader regrades its image quality")
    return await grade(ctx, doc, cmd.grade, cmd.reasons, cmd.comment)


async def grade(ctx: _Ctx, doc: Doc, code: Any, reasons: Any, comment: Any) -> Doc:
    """Record the reader's grade of ``doc``'s study (the latest counts); a reject grade returns it for
    a re-scan (``reading.returned``, reason ``image_quality``).  The caller checked the reader."""
    found, reasons, comment = model.check_grading(ctx.rt.consortium.quality, code, reasons, comment)
    if found.reject and doc["state"] not in workflow_model.HELD_STATES:
        raise Invalid(f"a signed report's study cannot be graded {found.code} ({found.label}); "
                      "correct the report with an addendum")
    study = await ctx.tx.get("studies", doc["study_uid"]) or {}
    previous = await ctx.tx.get(GRADINGS, doc["id"])
    grading = {"id": doc["id"], "reading_id": doc["id"], "study_instance_uid": doc["study_uid"],
               "organization": doc["organization"], "kind": doc["kind"],
               "modality": doc.get("modality") or next(iter(study.get("modalities") or []), None),
               "operators": list(study.get("operators") or []), "grade": found.code, "label": found.label,
               "reject": found.reject, "reasons": reasons, "comment": comment, "reader": ctx.actor.user_id,
               "reader_name": _user_name(ctx), "centre": doc["centre"], "graded_at": ctx.at,
               "revision": (previous or {}).get("revision", 0) + 1}
    await ctx.tx.put(GRADINGS, grading)
    summary = {k: grading[k] for k in ("grade", "label", "reasons", "comment", "reader", "graded_at")}
    doc = await _apply(ctx, doc, "grade", {"quality": summary})
    ctx.emit("study.quality_graded", doc["id"], {
        **{k: grading[k] for k in ("reading_id", "study_instance_uid", "organization", "modality", "operators",
                                   "grade", "reasons", "comment", "reader", "centre", "graded_at")},
        "label": found.label, "reject": found.reject, "kind": doc["kind"], "regrade": previous is not None})
    await ctx.record("quality.grade", f"reading/{doc['id']}", doc["organization"], grade=found.code,
                     reasons=reasons, regrade=previous is not None)
    if found.reject:
        labels = "、".join(reasons)
        doc = await return_for_rescan(ctx, doc, "image_quality",
                                      comment or f"{found.label} ({found.code}): {labels}")
    return doc


async def grade_when_signing(ctx: _Ctx, doc: Doc, grading: Any) -> Doc:
    """``Sign`` with ``quality``: grade first (not reject: a 废片 is returned, not reported)."""
    if not isinstance(grading, dict):
        raise Invalid("quality must be an object {grade, reasons, comment}")
    found = ctx.rt.consortium.quality.grade(grading.get("grade")) if isinstance(grading.get("grade"), str) else None
    if found is not None and found.reject:
        raise Invalid(f"a study graded {found.code} ({found.label}) is returned for a re-scan, not signed: "
                      "PUT .../quality with that grade")
    return await grade(ctx, doc, grading.get("grade"), grading.get("reasons"), grading.get("comment"))


# --- peer review --------------------------------------------------------------------------

def review_id(report_id: str) -> str:
    return f"pr-{report_id}"


async def on_released(ctx: _Ctx, report: Doc) -> None:
    """A report was released: sample it (critical findings always, else the configured share)."""
    reason = model.sample_reason(report, ctx.rt.consortium.quality.peer_review_percent, ctx.settings.rng)
    if reason:
        await sample(ctx, report, reason)


async def sample(ctx: _Ctx, report: Doc, reason: str) -> Doc | None:
    """Put ``report`` up for peer review unless it already is (one review per report)."""
    rid = review_id(report["id"])
    if await ctx.tx.get(REVIEWS, rid) is not None:
        return None
    review = {"id": rid, "report_id": report["id"], "reading_id": report["request_id"],
              "study_uid": report["study_uid"], "organization": report["organization"], "kind": report["kind"],
              "modality": report.get("modality"), "original_reader": report["reader_id"],
              "original_reader_name": report.get("reader_name"), "original_centre": report["centre"],
              "reason": reason, "sampled_at": ctx.at, "state": "sampled", "reviewer": None, "reviewer_name": None,
              "reviewer_centre": None, "score": None, "clinically_significant": None, "comment": None,
              "scored_at": None, "lead": None, "upheld": None, "arbitration_comment": None, "arbitrated_at": None,
              "addendum_id": None, "version": 0}
    await ctx.tx.insert(REVIEWS, review)
    ctx.emit("peer_review.sampled", rid, {k: review[k] for k in (
        "report_id", "reading_id", "original_reader", "original_centre", "reason", "reviewer", "sampled_at")}
        | {"review_id": rid})
    await ctx.record("peer_review.sample", f"peer-review/{rid}", report["organization"], reason=reason,
                     report_id=report["id"])
    return review


def sees_review(consortium: Consortium, actor, review: Doc) -> bool:
    """Admin all; a coordinator his centre's reviews and those his centre reviews; a reader those
    of his own reports, those he may score, scored or arbitrate."""
    if actor.role == "admin":
        return True
    centres = model.review_centres(consortium, review["original_centre"])
    if actor.role == "coordinator":
        return actor.centre in centres
    if actor.role != "reader":
        return False
    if actor.user_id in (review["original_reader"], review.get("reviewer"), review.get("lead")):
        return True
    user = consortium.users.get(actor.user_id)
    if review["state"] == "sampled":
        return model.may_review(consortium, user, review) is None
    if review["state"] == "arbitration":
        return model.may_arbitrate(consortium, user, review) is None
    return False


async def _review(ctx: _Ctx, review_id_: Any) -> Doc:
    review = await ctx.tx.get(REVIEWS, review_id_) if isinstance(review_id_, str) else None
    if review is None or not sees_review(ctx.rt.consortium, ctx.actor, review):
        raise NotFound(f"no peer review {review_id_!r}")
    return review


def _require(review: Doc, state: str, action: str) -> None:
    if review["state"] != state:
        raise IllegalTransition(review["state"], action, what="a peer review")


async def _save(ctx: _Ctx, review: Doc, changes: Doc) -> Doc:
    changes = {**changes, "version": review["version"] + 1}
    if not await ctx.tx.update(REVIEWS, review["id"], changes, where={"version": review["version"]}):
        raise Conflict(f"peer review {review['id']} changed concurrently; reload and try again")
    return {**review, **changes}


async def _assign(ctx: _Ctx, cmd: c.AssignPeerReview) -> Doc:
    review = await _review(ctx, cmd.review_id)
    if ctx.actor.role not in ("coordinator", "admin"):
        raise Forbidden(f"a {ctx.actor.role} may not assign a peer review")
    _require(review, "sampled", "assign")
    reader = ctx.rt.consortium.users.get(cmd.reviewer) if isinstance(cmd.reviewer, str) else None
    why = model.may_review(ctx.rt.consortium, reader, {**review, "reviewer": None})
    if why:
        raise Invalid(f"{cmd.reviewer!r} cannot review it: {why}")
    review = await _save(ctx, review, {"reviewer": reader.id, "reviewer_name": reader.name,
                                       "reviewer_centre": reader.centre, "assigned_by": ctx.actor.user_id})
    await ctx.record("peer_review.assign", f"peer-review/{review['id']}", review["organization"],
                     reviewer=reader.id)
    return review


async def _score(ctx: _Ctx, cmd: c.ScorePeerReview) -> Doc:
    review = await _review(ctx, cmd.review_id)
    user = ctx.rt.consortium.users.get(ctx.actor.user_id)
    if ctx.actor.role != "reader":
        raise Forbidden(f"a {ctx.actor.role} may not score a peer review")
    _require(review, "sampled", "score")
    if why := model.may_review(ctx.rt.consortium, user, review):
        raise Forbidden(why)
    score, significant, comment = model.check_score(cmd.score, cmd.clinically_significant, cmd.comment)
    review = await _save(ctx, review, {
        "state": "arbitration" if score == 3 else "scored", "reviewer": user.id, "reviewer_name": user.name,
        "reviewer_centre": user.centre, "score": score, "clinically_significant": significant,
        "comment": comment, "scored_at": ctx.at})
    ctx.emit("peer_review.scored", review["id"], {"review_id": review["id"], **{k: review[k] for k in (
        "report_id", "original_reader", "original_centre", "reviewer", "reviewer_centre", "score",
        "clinically_significant", "comment", "scored_at")}})
    await ctx.record("peer_review.score", f"peer-review/{review['id']}", review["organization"], score=score,
                     clinically_significant=significant)
    return review


async def _arbitrate(ctx: _Ctx, cmd: c.ArbitratePeerReview) -> Doc:
    review = await _review(ctx, cmd.review_id)
    _require(review, "arbitration", "arbitrate")
    if why := model.may_arbitrate(ctx.rt.consortium, ctx.rt.consortium.users.get(ctx.actor.user_id), review):
        raise Forbidden(why)
    if not isinstance(cmd.upheld, bool):
        raise Invalid("upheld must be true or false")
    comment = _text(cmd.comment, "comment", limit=model.MAX_COMMENT)
    addendum_id = None
    if cmd.addendum is not None and not cmd.upheld:
        raise Invalid("an addendum corrects the report only when the discrepancy is upheld")
    if cmd.upheld and review["clinically_significant"] and cmd.addendum is None:
        raise Invalid("the discrepancy is clinically significant: an upheld arbitration needs the addendum "
                      "text that corrects the report for the clinic")
    if cmd.addendum is not None:
        # The patient is affected: the clinic gets the correction through the existing addendum flow
        original = await ctx.tx.get("reports", review["report_id"])
        addendum = await write_addendum(ctx, original, _text(cmd.addendum, "addendum"))
        addendum_id = addendum["id"]
    review = await _save(ctx, review, {
        "state": "upheld" if cmd.upheld else "not_upheld", "lead": ctx.actor.user_id, "lead_name": _user_name(ctx),
        "upheld": cmd.upheld, "arbitration_comment": comment, "arbitrated_at": ctx.at, "addendum_id": addendum_id,
        # back to the original reader: his list of reviews shows the outcome (GET /peer-reviews)
        "feedback_to": review["original_reader"] if cmd.upheld else None})
    ctx.emit("peer_review.arbitrated", review["id"], {
        "review_id": review["id"], "upheld": cmd.upheld, "lead": ctx.actor.user_id, "comment": comment,
        "arbitrated_at": ctx.at, "report_id": review["report_id"], "original_reader": review["original_reader"],
        "original_centre": review["original_centre"], "addendum_id": addendum_id})
    await ctx.record("peer_review.arbitrate", f"peer-review/{review['id']}", review["organization"],
                     upheld=cmd.upheld, addendum_id=addendum_id)
    return review


HANDLERS = {c.GradeQuality: _grade_command, c.ScorePeerReview: _score, c.ArbitratePeerReview: _arbitrate,
            c.AssignPeerReview: _assign}

__all__ = ["GRADINGS", "HANDLERS", "REVIEWS", "RR", "grade", "on_released", "reject_code", "sample",
           "sees_review"]
