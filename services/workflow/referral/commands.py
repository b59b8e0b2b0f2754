"""Commands of two-way referral (双向转诊): plain frozen dataclasses built by the API and handed to
:func:`services.workflow.referral.service.execute`, which checks the values (``Invalid``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestUpReferral:
    """A clinic doctor refers a patient up; ``from_report`` / ``from_consultation`` pre-fill it."""

    target_organization: str | None = None
    department: str | None = None
    reason: str | None = None
    urgency: str = "routine"  # emergency | urgent | routine
    patient_id: str | None = None
    patient_name: str | None = None
    study_uids: tuple[str, ...] = ()
    from_report: str | None = None  # a signed report (its study, patient and impression)
    from_consultation: str | None = None  # a concluded consultation whose opinion is up_refer
    green_channel: str | None = None  # 胸痛 / 卒中 / 高危孕产妇 / 危重新生儿
    needs_bed: bool = False
    family_doctor: str | None = None  # the signed resident's family doctor (签约居民优先)
    slot_id: str | None = None  # book this reserved slot at once


@dataclass(frozen=True, slots=True)
class Book:
    referral_id: str
    slot_id: str


@dataclass(frozen=True, slots=True)
class Accept:
    """The receiving side accepts; an up-referral needs a booked slot (booked now with ``slot_id``)."""

    referral_id: str
    slot_id: str | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Refuse:
    referral_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Cancel:
    referral_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Arrive:
    referral_id: str


@dataclass(frozen=True, slots=True)
class Complete:
    """The encounter at the upper hospital ended."""

    referral_id: str
    summary: str = ""


@dataclass(frozen=True, slots=True)
class ReferDown:
    """The upper hospital refers the patient of an up-referral back down after treatment."""

    referral_id: str  # the up-referral
    diagnosis: str
    treatment_summary: str
    plan: dict[str, Any] = field(default_factory=dict)
    family_doctor: str | None = None
    target_organization: str | None = None  # default: the clinic that referred up


@dataclass(frozen=True, slots=True)
class ConfirmFollowUp:
    """The township confirms the first follow-up of a down-referral it accepted."""

    referral_id: str
    date: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class PublishSlots:
    """An upper hospital's department reserves outpatient slots or beds for referrals: explicit
    ``slots`` [{start, end}], or a ``quota`` on ``date`` between ``start`` and ``end`` (local HH:MM)."""

    department: str
    kind: str = "outpatient"
    slots: tuple[dict[str, Any], ...] = ()
    date: str | None = None
    quota: int | None = None
    start: str | None = None
    end: str | None = None
    organization: str | None = None  # admin only; others publish for their own organisation


Command = (RequestUpReferral | Book | Accept | Refuse | Cancel | Arrive | Complete | ReferDown | ConfirmFollowUp
           | PublishSlots)
