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
class Escalate:
    """Ask the centre's escalation (upper) centre for a second opinion."""

    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReturnForRescan:
    request_id: str
    reason_code: str  # one of RETURN_REASONS
    comment: str = ""


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
           | Addendum | Escalate | ReturnForRescan | MoveToCentre | AssignToReader)
