"""Commands of remote consultation: what a clinic, coordinator or specialist asks for.

Plain frozen dataclasses built by the API from validated bodies and handed to
:func:`services.workflow.consultation.service.execute`, which checks the values (``Invalid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestConsultation:
    """A clinic asks for a consultation.  The patient comes from ``patient_id`` (looked up in
    its own studies) or is free text (``patient_name``); studies are attached by UID."""

    chief_complaint: str
    history: str
    current_treatment: str
    question: str
    urgency: str  # stat | urgent | routine
    patient_id: str | None = None
    patient_name: str | None = None
    study_uids: tuple[str, ...] = ()
    specialty: str | None = None
    specialist: str | None = None  # a named specialist (user id of a reader)
    preferred_windows: tuple[dict[str, str], ...] = ()  # [{start, end}] ISO 8601


@dataclass(frozen=True, slots=True)
class Withdraw:
    """The clinic withdraws its request before it is scheduled."""

    consultation_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Triage:
    """The coordinating centre accepts the request for scheduling."""

    consultation_id: str
    note: str = ""
    specialty: str | None = None  # the coordinator may correct the requested specialty


@dataclass(frozen=True, slots=True)
class Schedule:
    """A slot, the panel (reader user ids, the lead first unless ``lead`` says otherwise)."""

    consultation_id: str
    start: str
    end: str
    specialists: tuple[str, ...]
    lead: str | None = None


@dataclass(frozen=True, slots=True)
class Reschedule:
    """A new slot (and optionally a new panel), with a reason."""

    consultation_id: str
    start: str
    end: str
    reason: str
    specialists: tuple[str, ...] = ()  # empty: keep the panel
    lead: str | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    consultation_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Start:
    consultation_id: str


@dataclass(frozen=True, slots=True)
class AddNote:
    consultation_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Conclude:
    """The lead signs the consultation opinion (会诊意见)."""

    consultation_id: str
    assessment: str
    recommendations: dict[str, Any] = field(default_factory=dict)
    signers: tuple[str, ...] = ()  # co-signing panel members; the lead always signs


Command = (RequestConsultation | Withdraw | Triage | Schedule | Reschedule | Cancel | Start | AddNote | Conclude)
