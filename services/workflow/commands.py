"""Commands of the reading workflow: what a clinic, reader or coordinator asks for.

Plain frozen dataclasses; the API builds them from request bodies and hands them to
:func:`services.workflow.service.execute`.  Values are checked there (``Invalid``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RETURN_REASONS = ("image_quality", "wrong_exam", "incomplete")


@dataclass(frozen=True, slots=True)
class RequestReading:
    """A clinic asks for a remote reading of one of its studies."""

    study_uid: str
    kind: str  # "imaging" | "ecg"
    priority: str  # "stat" | "urgent" | "routine"
    clinical_question: str
    green_channel: str | None = None  # 胸痛 | 卒中 | 高危孕产妇 | 危重新生儿
    signed_resident: bool = False  # 签约居民
    record_class: str | None = None  # outpatient | inpatient ...; None: the linked order's, else the study's
    recognition: dict[str, Any] | None = None  # 结果互认: {reason, comment?} to read despite a recognised prior


@dataclass(frozen=True, slots=True)
class CancelReading:
    """The clinic withdraws a request before a reader claimed it."""

    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Claim:
    request_id: str


@dataclass(frozen=True, slots=True)
class RenewLease:
    request_id: str


@dataclass(frozen=True, slots=True)
class Release:
    """The holder (or his centre's coordinator) gives the task back to the queue."""

    request_id: str


@dataclass(frozen=True, slots=True)
class SaveDraft:
    """Save the report being written; ``template_id`` (newest version unless ``template_version``)
    and ``fields`` (its structured values) are kept from the last draft when not given."""

    request_id: str
    findings: str
    impression: str
    critical: bool = False
    critical_category: str | None = None
    template_id: str | None = None
    template_version: int | None = None
    fields: dict | None = None


@dataclass(frozen=True, slots=True)
class Sign:
    """Sign the report; ``None`` values are taken from the saved draft.  A reader below his
    centre's ``sign_off`` title submits it for review (审核) instead: it is not released yet."""

    request_id: str
    findings: str | None = None
    impression: str | None = None
    critical: bool | None = None
    critical_category: str | None = None
    template_id: str | None = None
    template_version: int | None = None
    fields: dict | None = None
    quality: dict | None = None  # the image quality grading made when reporting ({grade, reasons, comment})


@dataclass(frozen=True, slots=True)
class Review:
    """A reviewer (审核医生) edits a submitted report (a new version); ``None`` keeps a value.
    ``release=True`` countersigns it: the report is released to the clinic with both names."""

    request_id: str
    findings: str | None = None
    impression: str | None = None
    critical: bool | None = None
    critical_category: str | None = None
    template_id: str | None = None
    template_version: int | None = None
    fields: dict | None = None
    release: bool = False


@dataclass(frozen=True, slots=True)
class SendBack:
    """A reviewer sends a submitted report back to its author with a comment."""

    request_id: str
    comment: str


@dataclass(frozen=True, slots=True)
class Addendum:
    """A correction of a signed report: a new report linked to it, delivered like it."""

    report_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ReviewAddendum:
    """A reviewer (审核医生) edits (``text``) and, with ``release=True``, countersigns the addendum a
    reader below the centre's ``sign_off`` submitted to the report ``report_id``."""

    report_id: str
    text: str | None = None
    release: bool = False


@dataclass(frozen=True, slots=True)
class SendBackAddendum:
    """A reviewer returns a junior's addendum to its author with a comment; he may write it again."""

    report_id: str
    comment: str


@dataclass(frozen=True, slots=True)
class Escalate:
    """Ask the centre's escalation (upper) centre for a second opinion."""

    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReturnForRescan:
    """Back to the clinic for a re-scan; ``image_quality`` is graded 废片 with ``quality_reasons``
    (``other`` if none are given: docs/quality.md)."""

    request_id: str
    reason_code: str  # one of RETURN_REASONS
    comment: str = ""
    quality_reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GradeQuality:
    """The reader grades the study's image quality (影像质控): the consortium's scale (甲/乙/丙/废片 by
    default) and reason codes; a reject grade (废片) returns the study for a re-scan."""

    request_id: str
    grade: str
    reasons: tuple[str, ...] = ()
    comment: str = ""


@dataclass(frozen=True, slots=True)
class ScorePeerReview:
    """A second reader scores a sampled report, RADPEER-style."""

    review_id: str
    score: int  # 1 agree, 2 minor, 3 significant discrepancy
    clinically_significant: bool = False
    comment: str = ""


@dataclass(frozen=True, slots=True)
class ArbitratePeerReview:
    """A centre lead decides a score 3; upheld with ``addendum`` text corrects the report for the clinic."""

    review_id: str
    upheld: bool
    comment: str = ""
    addendum: str | None = None


@dataclass(frozen=True, slots=True)
class AssignPeerReview:
    """A coordinator names the second reader of a sampled report."""

    review_id: str
    reviewer: str


@dataclass(frozen=True, slots=True)
class MoveToCentre:
    """A coordinator moves a queued task to another centre."""

    request_id: str
    centre: str
    reason: str


@dataclass(frozen=True, slots=True)
class AssignToReader:
    """A coordinator hands a task of his centre to a named reader of it (queued, or taken from its holder)."""

    request_id: str
    reader_id: str
    reason: str


Command = (RequestReading | CancelReading | Claim | RenewLease | Release | SaveDraft | Sign | Review | SendBack
           | Addendum | ReviewAddendum | SendBackAddendum | Escalate | ReturnForRescan | MoveToCentre | AssignToReader
           | GradeQuality | ScorePeerReview | ArbitratePeerReview | AssignPeerReview)
