"""The remote consultation (远程会诊) state machine and its scheduling rules: I/O free.

The service reads the document, asks :func:`transition` for the changes and writes them
with a compare-and-set on ``version``, like the reading request (``workflow/model.py``).

    requested --triage--> triaged --schedule--> scheduled --start--> in_progress --conclude--> concluded
        |                    |                   |   ^  \\                |
        +--withdraw----------+--> withdrawn      |   |   +--no_show--> no_show (slot passed, never started)
        +--cancel------------+-------------------+---+------------------+--> cancelled
                                  reschedule: scheduled|no_show --> scheduled (with a reason)
"""

from __future__ import annotations

from datetime import date
from typing import Any

from ..errors import IllegalTransition, Invalid

STATES = ("requested", "triaged", "scheduled", "in_progress", "concluded", "withdrawn", "cancelled", "no_show")
FINAL_STATES = ("concluded", "withdrawn", "cancelled")
BOOKED_STATES = ("scheduled", "in_progress")  # the specialists' time is held (``bookings``)
URGENCIES = ("stat", "urgent", "routine")
DISPOSITIONS = ("manage_locally", "up_refer")

# action -> (states it is allowed in, the state it leads to; None keeps the state)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "triage": (("requested",), "triaged"),
    "schedule": (("triaged",), "scheduled"),
    "reschedule": (("scheduled", "no_show"), "scheduled"),
    "withdraw": (("requested", "triaged"), "withdrawn"),
    "cancel": (("requested", "triaged", "scheduled", "no_show"), "cancelled"),
    "start": (("scheduled",), "in_progress"),
    "add_note": (("scheduled", "in_progress"), None),
    "conclude": (("in_progress",), "concluded"),
    "remind": (("scheduled",), None),
    "flag_no_show": (("scheduled",), "no_show"),
}

# Bookings are held in cells of this many seconds, one document per (specialist, cell) with a
# unique id: two overlapping slots always share a cell, so a second booking fails to insert.
BOOKING_CELL_SECONDS = 300
MAX_SLOT_SECONDS = 8 * 3600


def illegal(state: str, action: str, detail: str = "") -> IllegalTransition:
    """409 naming the consultation's state and the refused action (the API maps it by class)."""
    exc = IllegalTransition(state, action, detail)
    exc.args = (f"cannot {action.replace('_', ' ')} a consultation in state {state!r}"
                + (f": {detail}" if detail else ""),)
    return exc


def require(state: str, action: str) -> None:
    sources, _ = TRANSITIONS[action]
    if state not in sources:
        raise illegal(state, action, _why(state, action))


def transition(doc: dict[str, Any], action: str, *, at: str, by: str,
               changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The top-level fields to set on ``doc`` for ``action``; raise on an illegal transition."""
    require(doc["state"], action)
    _, target = TRANSITIONS[action]
    new_state = target or doc["state"]
    out = dict(changes or {})
    out["state"] = new_state
    out["version"] = doc.get("version", 0) + 1
    out["updated_at"] = at
    out["history"] = [*doc.get("history", []), {"action": action, "state": new_state, "at": at, "by": by}]
    return out


def _why(state: str, action: str) -> str:
    if state in FINAL_STATES:
        return f"the consultation is {state} and final"
    if action == "withdraw":
        return "it is already scheduled; ask the coordinator to cancel it"
    if action == "schedule" and state == "requested":
        return "triage it first"
    if action in ("start", "add_note") and state in ("requested", "triaged"):
        return "it is not scheduled yet"
    if action == "conclude":
        return "it has not started"
    if state == "no_show":
        return "its slot passed without it starting; reschedule or cancel it"
    return f"allowed only in {', '.join(TRANSITIONS[action][0])}"


# --- scheduling rules -------------------------------------------------------------------------

def check_slot(start: float, end: float, now: float) -> None:
    """A slot starts in the future, ends after it starts, lasts at most 8 h, on 5-minute boundaries."""
    if end <= start:
        raise Invalid("the slot must end after it starts")
    if end - start > MAX_SLOT_SECONDS:
        raise Invalid(f"a slot lasts at most {MAX_SLOT_SECONDS // 3600} hours")
    if start < now:
        raise Invalid("the slot must start in the future")
    if start % BOOKING_CELL_SECONDS or end % BOOKING_CELL_SECONDS:
        raise Invalid(f"slots start and end on {BOOKING_CELL_SECONDS // 60}-minute boundaries (e.g. 09:00, 09:05)")


def booking_cells(start: float, end: float) -> list[int]:
    """The cells (epoch seconds of their start) a slot occupies."""
    first = int(start) - int(start) % BOOKING_CELL_SECONDS
    return list(range(first, int(end), BOOKING_CELL_SECONDS))


def booking_id(specialist: str, cell: int) -> str:
    return f"{specialist}|{cell}"


def overlaps(a_start: str, a_end: str, b_start: str, b_end: str) -> bool:
    """ISO 8601 UTC strings sort as text."""
    return a_start < b_end and b_start < a_end


def meeting_url(template: str | None, consultation_id: str) -> str | None:
    return template.replace("{consultation_id}", consultation_id) if template else None


# --- the opinion --------------------------------------------------------------------------------

def recommendations(disposition: Any, plan: Any, referral: Any, follow_up_date: Any) -> dict[str, Any]:
    """Validated recommendations with a readable ``text`` (what the SR / PDF prints)."""
    if disposition not in DISPOSITIONS:
        raise Invalid(f"recommendations.disposition must be one of {', '.join(DISPOSITIONS)}, not {disposition!r}")
    if plan is not None and (not isinstance(plan, str) or len(plan) > 4000):
        raise Invalid("recommendations.plan must be a string of at most 4000 characters")
    plan = (plan or "").strip() or None
    if disposition == "manage_locally" and not plan:
        raise Invalid("managing locally needs a plan (recommendations.plan)")
    if disposition == "up_refer":
        if not isinstance(referral, dict) or not all(
                isinstance(referral.get(k), str) and referral[k].strip() for k in ("hospital", "department")):
            raise Invalid("up-referral needs recommendations.referral with hospital and department")
        referral = {"hospital": referral["hospital"].strip(), "department": referral["department"].strip()}
    elif referral is not None:
        raise Invalid("recommendations.referral is only allowed with disposition up_refer")
    if follow_up_date is not None:
        try:
            date.fromisoformat(follow_up_date)
        except (TypeError, ValueError):
            raise Invalid(f"recommendations.follow_up_date must be a date (YYYY-MM-DD), not {follow_up_date!r}") \
                from None
    parts = []
    if disposition == "up_refer":
        parts.append(f"上转 (up-refer): {referral['hospital']} {referral['department']}")
    else:
        parts.append("基层管理 (manage locally)")
    if plan:
        parts.append(f"方案 (plan): {plan}")
    if follow_up_date:
        parts.append(f"随访日期 (follow-up): {follow_up_date}")
    return {"disposition": disposition, "plan": plan, "referral": referral if disposition == "up_refer" else None,
            "follow_up_date": follow_up_date, "text": "\n".join(parts)}
