"""The exam request (检查申请, an *order*) state machine and its pure helpers: I/O free.

An order is created ``scheduled``: it has an Accession Number, a Requested Procedure and one
Scheduled Procedure Step, and is on its organisation's Modality Worklist.  The modality's
Modality Performed Procedure Step (MPPS) moves it::

    scheduled --start (MPPS IN PROGRESS)--> in_progress --complete (MPPS COMPLETED)--> completed
        |  \\                                   \\--discontinue (MPPS DISCONTINUED)--> discontinued
        |   \\--complete (a COMPLETED without IN PROGRESS, or the study's quiet period)--> completed
        +--cancel--> cancelled;   scheduled --change--> scheduled (before the exam only)

``link`` records the study that arrived with the order's Accession Number (or the Study
Instance UID the worklist gave it); it never changes the state.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from ..errors import IllegalTransition

STATES = ("scheduled", "in_progress", "completed", "discontinued", "cancelled")
OPEN_STATES = ("scheduled", "in_progress")
WORKLIST_STATES = ("scheduled",)  # what the Modality Worklist offers

TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "change": (("scheduled",), None),
    "cancel": (("scheduled",), "cancelled"),
    "start": (("scheduled",), "in_progress"),
    "complete": (("scheduled", "in_progress"), "completed"),
    "discontinue": (("scheduled", "in_progress"), "discontinued"),
    "link": (("scheduled", "in_progress", "completed", "discontinued"), None),
}

# MPPS Performed Procedure Step Status (0040,0252) -> the order's action
MPPS_ACTIONS = {"IN PROGRESS": "start", "COMPLETED": "complete", "DISCONTINUED": "discontinue"}

# Patient fields compared between the order and the study that arrived for it (四个一致).
DEMOGRAPHICS = ("patient_id", "patient_name", "sex", "birth_date")

# Fields a clinic may change while the order is still scheduled.
CHANGEABLE = ("patient_name", "patient_id", "resident_id", "sex", "birth_date", "modality", "body_part",
              "procedure_code", "procedure_description", "clinical_question", "requesting_physician", "priority",
              "green_channel", "signed_resident", "remote_reading", "station_ae", "scheduled_at",
              "requesting_department", "record_class")


def require(state: str, action: str) -> None:
    sources, _ = TRANSITIONS[action]
    if state not in sources:
        raise IllegalTransition(state, action, _why(state), what="an order")


def transition(doc: dict[str, Any], action: str, *, at: str, by: str,
               changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The top-level fields to set on ``doc`` for ``action``; raise :class:`IllegalTransition`."""
    require(doc["state"], action)
    target = TRANSITIONS[action][1] or doc["state"]
    out = dict(changes or {})
    out["state"] = target
    out["on_worklist"] = target in WORKLIST_STATES
    out["version"] = doc.get("version", 0) + 1
    out["updated_at"] = at
    out["history"] = [*doc.get("history", []), {"action": action, "state": target, "at": at, "by": by}]
    return out


def _why(state: str) -> str:
    if state in ("completed", "discontinued", "cancelled"):
        return f"the order is {state}"
    if state == "in_progress":
        return "the exam has started"
    return "the exam has not started"


# --- identifiers the worklist gives the modality ------------------------------------------

def accession_number() -> str:
    """An Accession Number (SH, at most 16 characters): ``YL`` and 12 random hex digits, upper case."""
    return "YL" + uuid.uuid4().hex[:12].upper()


def study_instance_uid() -> str:
    """A Study Instance UID for the modality to use (PS3.5 B.2: ``2.25.`` and a UUID as an integer)."""
    return f"2.25.{uuid.uuid4().int}"


# --- demographics ---------------------------------------------------------------------------

def _name_forms(name: str | None) -> set[str]:
    """A person name's comparable forms: the whole and each component group, ``^`` and spaces removed."""
    text = (name or "").strip()
    forms = {re.sub(r"[\^\s]+", "", g).upper() for g in [text, *text.split("=")]}
    return {f for f in forms if f}


def mismatches(order: dict[str, Any], study: dict[str, Any]) -> list[dict[str, Any]]:
    """The demographics that differ between the order and the study (a field empty on either side is
    not a difference).  A name matches when any component group matches (张^三 = Zhang^San=张^三)."""
    found = []
    for field in DEMOGRAPHICS:
        ours, theirs = order.get(field), study.get(field)
        if not ours or not theirs:
            continue
        if field == "patient_name":
            same = bool(_name_forms(ours) & _name_forms(theirs))
        else:
            same = str(ours).strip().upper() == str(theirs).strip().upper()
        if not same:
            found.append({"field": field, "order": ours, "study": theirs})
    return found
