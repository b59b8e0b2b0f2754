"""Image quality grades and RADPEER-style peer review: the rules, free of I/O.

A reader grades a study's image quality when he reports it, on the consortium's scale
(甲/乙/丙/废片 by default, ``quality.scale``); a 废片 (the scale's reject grade) needs reasons
and returns the study for a re-scan.  Signed reports are sampled for a second reader; a score 3
goes to a centre lead for arbitration.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ...core.consortium import Consortium, QualityConfig, QualityGrade, User
from ..errors import Invalid

REASONS = ("positioning", "exposure", "motion", "artefact", "missing_series", "other")
MAX_COMMENT = 2000

# RADPEER: 1 concur; 2 discrepancy in interpretation, not ordinarily expected to be made;
# 3 discrepancy that should be made most of the time.  Each of 2 and 3 says whether it is
# clinically significant.
SCORES = (1, 2, 3)
SAMPLE_REASONS = ("random", "critical", "addendum")
# sampled -> scored (1, 2) | arbitration (3) -> upheld | not_upheld
REVIEW_STATES = ("sampled", "scored", "arbitration", "upheld", "not_upheld")
OPEN_REVIEW = ("sampled",)


def check_grading(config: QualityConfig, grade: Any, reasons: Any, comment: Any) -> tuple[QualityGrade, list[str], str]:
    """The grade, its reason codes (deduplicated, in REASONS order) and the comment; ``Invalid`` naming
    what is wrong.  A reject grade (废片) needs at least one reason."""
    found = config.grade(grade) if isinstance(grade, str) else None
    if found is None:
        codes = ", ".join(f"{g.code} ({g.label})" for g in config.scale)
        raise Invalid(f"grade must be one of {codes}, not {grade!r}")
    if reasons is None:
        reasons = []
    if not isinstance(reasons, (list, tuple)) or not all(isinstance(r, str) for r in reasons):
        raise Invalid("reasons must be a list of reason codes")
    unknown = [r for r in reasons if r not in REASONS]
    if unknown:
        raise Invalid(f"unknown reason code(s) {', '.join(map(repr, unknown))}; use {', '.join(REASONS)}")
    if found.reject and not reasons:
        raise Invalid(f"grade {found.code} ({found.label}) needs at least one reason ({', '.join(REASONS)})")
    if comment is None:
        comment = ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise Invalid(f"comment must be a string of at most {MAX_COMMENT} characters")
    return found, [r for r in REASONS if r in reasons], comment


def sample_reason(report: dict[str, Any], percent: int, rng: random.Random) -> str | None:
    """Why a just released report goes to peer review, or None: every critical finding, else
    ``percent`` % at random.  An addendum is not sampled itself: its original is (``addendum``)."""
    if report.get("addendum_of"):
        return None
    if report.get("critical"):
        return "critical"
    return "random" if rng.random() * 100 < percent else None


def check_score(score: Any, clinically_significant: Any, comment: Any) -> tuple[int, bool, str]:
    if isinstance(score, bool) or score not in SCORES:
        raise Invalid(f"score must be 1 (agree), 2 (minor) or 3 (significant discrepancy), not {score!r}")
    if not isinstance(clinically_significant, bool):
        raise Invalid("clinically_significant must be true or false")
    if score == 1 and clinically_significant:
        raise Invalid("score 1 (agree) cannot be clinically significant")
    if comment is None:
        comment = ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise Invalid(f"comment must be a string of at most {MAX_COMMENT} characters")
    if score > 1 and not comment.strip():
        raise Invalid(f"a score {score} needs a comment saying what differs")
    return score, clinically_significant, comment


def review_centres(consortium: Consortium, centre: str) -> tuple[str, ...]:
    """Where a second reader of ``centre``'s reports may come from: the same centre or its upper one."""
    upper = consortium.centres[centre].escalation if centre in consortium.centres else None
    return (centre, upper) if upper else (centre,)


def may_review(consortium: Consortium, reader: User | None, review: dict[str, Any]) -> str | None:
    """Why ``reader`` may not score ``review`` (None: he may)."""
    if reader is None or reader.role != "reader":
        return "only a reader scores a peer review"
    if reader.id == review["original_reader"]:
        return "a reader may not review his own report"
    if reader.centre not in review_centres(consortium, review["original_centre"]):
        return (f"reports of {review['original_centre']} are reviewed by readers of "
                f"{' or '.join(review_centres(consortium, review['original_centre']))}")
    if review.get("reviewer") not in (None, reader.id):
        return f"peer review {review['id']} is assigned to {review['reviewer']}"
    return None


def may_arbitrate(consortium: Consortium, user: User | None, review: dict[str, Any]) -> str | None:
    """Why ``user`` may not arbitrate ``review`` (None: he may): a lead (科主任) of the report's centre
    or its upper centre, neither its author nor its reviewer."""
    if user is None or user.role != "reader" or not user.lead:
        return "only a centre lead (科主任) arbitrates a peer review"
    if user.id in (review["original_reader"], review.get("reviewer")):
        return "the report's author or reviewer may not arbitrate it"
    if user.centre not in review_centres(consortium, review["original_centre"]):
        return f"a lead of {' or '.join(review_centres(consortium, review['original_centre']))} arbitrates it"
    return None


def grading_rates(gradings: Iterable[dict[str, Any]], reject_codes: set[str], top_code: str,
                  month_of) -> list[dict[str, Any]]:
    """甲片率 and 废片率 per site × modality × technician × month from the latest grading of each reading.

    A study sent by two technicians counts for each; one with no Operators' Name counts under ``""``."""
    groups: dict[tuple[str, str, str, str], Counter] = {}
    for g in gradings:
        for operator in g.get("operators") or [""]:
            key = (g["organization"], g.get("modality") or "", operator, month_of(g["graded_at"]))
            groups.setdefault(key, Counter())[g["grade"]] += 1
    rows = []
    for (organization, modality, operator, month), counts in sorted(groups.items()):
        graded = sum(counts.values())
        rejects = sum(n for code, n in counts.items() if code in reject_codes)
        rows.append({"organization": organization, "modality": modality, "operator": operator, "month": month,
                     "graded": graded, "grades": dict(sorted(counts.items())),
                     "top_rate": round(counts.get(top_code, 0) / graded, 4),
                     "reject_rate": round(rejects / graded, 4)})
    return rows


def review_stats(reviews: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Sample size, agreement rate and discrepancies per ``key`` (``original_reader`` or ``original_centre``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in reviews:
        groups.setdefault(r[key], []).append(r)
    rows = []
    for name, items in sorted(groups.items()):
        scored = [r for r in items if r.get("score") is not None]
        agree = sum(r["score"] == 1 for r in scored)
        rows.append({key: name, "sampled": len(items), "scored": len(scored),
                     "agreement_rate": round(agree / len(scored), 4) if scored else None,
                     "minor": sum(r["score"] == 2 for r in scored),
                     "significant": sum(r["score"] == 3 for r in scored),
                     "clinically_significant": sum(bool(r.get("clinically_significant")) for r in scored),
                     "upheld": sum(r["state"] == "upheld" for r in items),
                     "not_upheld": sum(r["state"] == "not_upheld" for r in items),
                     "awaiting_arbitration": sum(r["state"] == "arbitration" for r in items)})
    return rows
