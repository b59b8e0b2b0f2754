"""The referral (双向转诊) state machine and its rules: I/O free.

    up:    requested --accept (a booked slot)--> accepted --arrive--> arrived --complete--> completed
              |   \\--refuse (reason)--> refused         \\--(slot passed, no arrival)--> no_show
              +--cancel (reason)-- requested | accepted --> cancelled
    down:  requested --accept--> accepted --confirm_follow_up--> completed
              \\--refuse (reason)--> refused

The service reads the document, asks :func:`transition` for the changes and writes them with a
compare-and-set on ``version``, like the consultation (``consultation/model.py``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from ..errors import IllegalTransition, Invalid

DIRECTIONS = ("up", "down")
STATES = ("requested", "accepted", "arrived", "completed", "refused", "cancelled", "no_show")
FINAL_STATES = ("completed", "refused", "cancelled")
URGENCIES = ("emergency", "urgent", "routine")
GREEN_CHANNELS = ("胸痛", "卒中", "高危孕产妇", "危重新生儿")  # 绿色通道: the earliest slot or a bed at once
SLOT_KINDS = ("outpatient", "bed")
SLOT_STATES = ("reserved", "booked", "released", "used", "no_show")

# action -> (directions, states it is allowed in, the state it leads to; None keeps the state)
TRANSITIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "book": (("up",), ("requested",), None),
    "accept": (("up", "down"), ("requested",), "accepted"),
    "refuse": (("up", "down"), ("requested",), "refused"),
    "cancel": (("up", "down"), ("requested", "accepted"), "cancelled"),
    "arrive": (("up",), ("accepted", "no_show"), "arrived"),
    "complete": (("up",), ("arrived",), "completed"),
    "confirm_follow_up": (("down",), ("accepted",), "completed"),
    "escalate": (("up",), ("requested",), None),
    "flag_no_show": (("up",), ("accepted",), "no_show"),
    "refer_down": (("up",), ("arrived", "completed"), None),
}


def illegal(doc: dict[str, Any], action: str, detail: str = "") -> IllegalTransition:
    exc = IllegalTransition(doc["state"], action, detail)
    exc.args = (f"cannot {action.replace('_', ' ')} a{'n' if doc['direction'] == 'up' else ''} "
                f"{doc['direction']}-referral in state {doc['state']!r}" + (f": {detail}" if detail else ""),)
    return exc


def require(doc: dict[str, Any], action: str) -> None:
    directions, sources, _ = TRANSITIONS[action]
    if doc["direction"] not in directions:
        raise illegal(doc, action, f"only {'/'.join(directions)}-referrals can {action.replace('_', ' ')}")
    if doc["state"] not in sources:
        raise illegal(doc, action, _why(doc["state"], action))


def transition(doc: dict[str, Any], action: str, *, at: str, by: str,
               changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The top-level fields to set on ``doc`` for ``action``; raise on an illegal transition."""
    require(doc, action)
    target = TRANSITIONS[action][2]
    new_state = target or doc["state"]
    out = dict(changes or {})
    out["state"] = new_state
    out["version"] = doc.get("version", 0) + 1
    out["updated_at"] = at
    out["history"] = [*doc.get("history", []), {"action": action, "state": new_state, "at": at, "by": by}]
    return out


def _why(state: str, action: str) -> str:
    if state in FINAL_STATES:
        return f"the referral is {state} and final"
    if action in ("accept", "refuse", "book") and state != "requested":
        return "it has already been answered"
    if action == "arrive":
        return "it has not been accepted"
    if action == "complete":
        return "the patient has not arrived"
    return f"allowed only in {', '.join(TRANSITIONS[action][1])}"


# --- rules ------------------------------------------------------------------------------------

def slot_id(organization: str, department: str, kind: str, start: str, n: int) -> str:
    """Deterministic: publishing the same slot twice is the same slot (start is ISO UTC)."""
    compact = start.replace("-", "").replace(":", "").replace(".000Z", "Z")
    return f"sl|{organization}|{department}|{kind}|{compact}|{n}"


def bookable(slot: dict[str, Any], now_iso: str, *, green_channel: bool = False) -> str | None:
    """Why a referral may not book ``slot`` now (None: it may).  A reserved slot still free at its
    release time belongs to the hospital's general pool; a green-channel referral may still take it."""
    if slot.get("state") == "booked":
        return f"slot {slot['id']} is already booked by referral {slot.get('referral_id')}"
    if slot.get("state") not in ("reserved", "released"):
        return f"slot {slot['id']} is {slot.get('state')}"
    if slot["start"] <= now_iso:
        return f"slot {slot['id']} started at {slot['start']}"
    if not green_channel and (slot.get("state") == "released" or slot["release_at"] <= now_iso):
        return (f"slot {slot['id']} was released to the general pool at {slot['release_at']} "
                "(reserved slots return to it before they start)")
    return None


def earliest(slots: list[dict[str, Any]], now_iso: str, *, green_channel: bool) -> list[dict[str, Any]]:
    """The slots a referral may book, earliest first (beds before outpatient slots at one time)."""
    ok = [s for s in slots if bookable(s, now_iso, green_channel=green_channel) is None]
    return sorted(ok, key=lambda s: (s["start"], 0 if s["kind"] == "bed" else 1, s["id"]))


def plan(value: Any) -> dict[str, Any]:
    """A down-referral's continuation plan: medicines, follow-ups, rehabilitation (validated)."""
    if not isinstance(value, dict):
        raise Invalid("plan must be an object with medicines, follow_ups and rehabilitation")
    unknown = set(value) - {"medicines", "follow_ups", "rehabilitation"}
    if unknown:
        raise Invalid(f"plan has unknown keys: {', '.join(sorted(unknown))}")
    medicines = value.get("medicines") or []
    if not isinstance(medicines, list) or len(medicines) > 50:
        raise Invalid("plan.medicines must be a list (at most 50)")
    meds = []
    for i, m in enumerate(medicines):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"].strip():
            raise Invalid(f"plan.medicines[{i}] needs a name (and optionally dose, frequency, duration)")
        meds.append({"name": m["name"].strip(), **{k: str(m[k]).strip() for k in ("dose", "frequency", "duration")
                                                    if m.get(k) is not None}})
    follow_ups = value.get("follow_ups") or []
    if not isinstance(follow_ups, list) or not follow_ups or len(follow_ups) > 50:
        raise Invalid("plan.follow_ups must list at least one follow-up {date, what}")
    fus = []
    for i, f in enumerate(follow_ups):
        if not isinstance(f, dict):
            raise Invalid(f"plan.follow_ups[{i}] must be an object {{date, what}}")
        try:
            day = date.fromisoformat(f.get("date")).isoformat()
        except (TypeError, ValueError):
            raise Invalid(f"plan.follow_ups[{i}].date must be a date (YYYY-MM-DD)") from None
        what = f.get("what")
        if not isinstance(what, str) or not what.strip():
            raise Invalid(f"plan.follow_ups[{i}].what must say what is followed up")
        fus.append({"date": day, "what": what.strip()})
    rehab = value.get("rehabilitation")
    if rehab is not None and (not isinstance(rehab, str) or len(rehab) > 4000):
        raise Invalid("plan.rehabilitation must be a string of at most 4000 characters")
    return {"medicines": meds, "follow_ups": sorted(fus, key=lambda f: f["date"]),
            "rehabilitation": (rehab or "").strip() or None}
