"""The reading request (阅片申请) state machine: I/O free.

A reading request is a document (see ``docs/workflow.md``); this module says which
actions each state allows and what changes they make.  It never touches the store:
the service reads the document, asks :func:`transition` for the changes, and writes
them with a compare-and-set on ``version``.

    requested --route--> queued --claim--> claimed --save_draft--> draft --sign--> signed
                          ^  |                |  \\                 |  \\
                          |  +--cancel--> cancelled                 |
                          +--expire_lease / release------+----------+
    claimed|draft --escalate--> escalated (a new linked request is queued upstream)
    claimed|draft --return--> returned (to the clinic for a re-scan)
    queued --assign--> claimed; claimed|draft --assign--> same state, another holder

Two-level sign-off (报告医生 / 审核医生): a reader below his centre's ``sign_off`` title submits
instead of signing; a reader of that title or above reviews (审核), edits, sends back or countersigns:

    claimed|draft --submit--> submitted --review--> submitted (a reviewer's edit)
                              submitted --countersign--> signed (released: the clinic sees it now)
                              submitted --send_back--> draft (held again by its author, with a comment)
"""

from __future__ import annotations

from typing import Any

from .errors import IllegalTransition

STATES = ("requested", "queued", "claimed", "draft", "submitted", "signed", "escalated", "returned", "cancelled")
OPEN_STATES = ("requested", "queued", "claimed", "draft", "submitted")
HELD_STATES = ("claimed", "draft")  # a reader holds the lease
FINAL_STATES = ("signed", "escalated", "returned", "cancelled")
# on a centre's worklist (``on_worklist``, indexed); a submitted report waits there for its reviewer
WORKLIST_STATES = ("queued", "claimed", "draft", "submitted")

# action -> (states it is allowed in, the state it leads to; None keeps the state)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "route": (("requested",), "queued"),
    "cancel": (("requested", "queued"), "cancelled"),
    "claim": (("queued",), "claimed"),
    "renew": (HELD_STATES, None),
    "release": (HELD_STATES, "queued"),
    "expire_lease": (HELD_STATES, "queued"),
    "save_draft": (HELD_STATES, "draft"),
    "sign": (HELD_STATES, "signed"),
    "submit": (HELD_STATES, "submitted"),
    "review": (("submitted",), None),
    "countersign": (("submitted",), "signed"),
    "send_back": (("submitted",), "draft"),
    "escalate": (HELD_STATES, "escalated"),
    "return": (HELD_STATES, "returned"),
    "move": (("queued",), None),
    "assign": (("queued", *HELD_STATES), None),  # queued -> claimed; a held task keeps its state
    "addendum": (("signed",), None),
    # image quality grading (影像质控, docs/quality.md): by the holder while reporting, or by the
    # signer afterwards (a regrade); a 废片 grade is graded then returned (``return``)
    "grade": ((*HELD_STATES, "signed"), None),
}

PRIORITY_RANK = {"stat": 0, "urgent": 1, "routine": 2}


def allowed(state: str, action: str) -> bool:
    sources, _ = TRANSITIONS[action]
    return state in sources


def require(state: str, action: str) -> None:
    """Raise :class:`IllegalTransition` unless ``action`` is allowed in ``state``."""
    if not allowed(state, action):
        raise IllegalTransition(state, action, _why(state))


def transition(doc: dict[str, Any], action: str, *, at: str, by: str,
               changes: dict[str, Any] | None = None, detail: str = "") -> dict[str, Any]:
    """The top-level fields to set on ``doc`` for ``action``; raise :class:`IllegalTransition`.

    Adds the new ``state``, bumps ``version`` and appends to ``history``; ``changes``
    carries the action's own fields.
    """
    sources, target = TRANSITIONS[action]
    state = doc["state"]
    if state not in sources:
        raise IllegalTransition(state, action, detail or _why(state))
    out = dict(changes or {})
    new_state = target or ("claimed" if action == "assign" and state == "queued" else state)
    out["state"] = new_state
    out["on_worklist"] = new_state in WORKLIST_STATES
    out["version"] = doc.get("version", 0) + 1
    out["updated_at"] = at
    out["history"] = [*doc.get("history", []), {"action": action, "state": new_state, "at": at, "by": by}]
    if new_state not in HELD_STATES and state in HELD_STATES:
        out.update(claimed_by=None, claimed_by_name=None, lease_expires_at=None)
    return out


def _why(state: str) -> str:
    if state in FINAL_STATES:
        return f"the request is {state} and final"
    if state == "requested":
        return "the study has not fully arrived yet"
    if state == "queued":
        return "nobody has claimed it"
    if state == "submitted":
        return "the report waits for its review (审核)"
    return "a reader holds it"


def boost_rank(boosts: tuple[str, ...], *, green_channel: str | None, signed_resident: bool) -> int:
    """0 is the strongest: within one priority, ``boosts`` (consortium ``priority_boost``) in order."""
    has = {"green_channel": bool(green_channel), "signed_resident": bool(signed_resident)}
    rank = 0
    for name in boosts:
        rank = rank * 2 + (0 if has.get(name) else 1)
    return rank


def worklist_key(doc: dict[str, Any]) -> tuple[int, int, str, str]:
    """Worklist order: priority, then boosts (green channel, signed resident), then deadline."""
    return (doc["priority_rank"], doc["boost_rank"], doc.get("deadline") or "", doc.get("requested_at") or "")


WORKLIST_SORT = (("priority_rank", 1), ("boost_rank", 1), ("deadline", 1), ("requested_at", 1))


def validate_report(findings: str | None, impression: str | None, critical: bool,
                    critical_category: str | None) -> list[str]:
    """Problems that stop a report from being signed (empty list: fine)."""
    problems = []
    if not (findings or "").strip():
        problems.append("findings must not be empty")
    if not (impression or "").strip():
        problems.append("impression must not be empty")
    if critical and not (critical_category or "").strip():
        problems.append("a critical finding (危急值) needs a critical_category")
    if not critical and critical_category:
        problems.append("critical_category is only allowed with critical=true")
    return problems
