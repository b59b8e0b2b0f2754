"""Who may see and do what in the reading workflow.  I/O free.

Scope: a clinic sees its organisation's studies and requests, a reader or coordinator
his centre's requests, an admin everything, an auditor none (he reads the audit log).
What the caller may not see is reported as not found, never as forbidden.
"""

from __future__ import annotations

from typing import Any

from ..core.auth import Principal

# action -> roles that may do it (scope is checked separately)
ROLES_FOR: dict[str, tuple[str, ...]] = {
    "request": ("clinic", "admin"),
    "cancel": ("clinic", "admin"),
    "claim": ("reader",),
    "renew": ("reader",),
    "release": ("reader", "coordinator", "admin"),
    "save_draft": ("reader",),
    "sign": ("reader",),
    "review": ("reader",),  # and his title must reach the centre's sign_off (service)
    "send_back": ("reader",),
    "addendum": ("reader",),
    "escalate": ("reader",),
    "return": ("reader",),
    "move": ("coordinator", "admin"),
    "assign": ("coordinator", "admin"),
    "grade": ("reader",),
}


def may(actor: Principal, action: str) -> bool:
    return actor.role in ROLES_FOR[action]


def sees_request(actor: Principal, doc: dict[str, Any]) -> bool:
    if actor.role == "admin":
        return True
    if actor.role == "clinic":
        return doc.get("organization") == actor.organization
    if actor.role in ("reader", "coordinator"):
        return actor.centre is not None and doc.get("centre") == actor.centre
    return False


def sees_study(actor: Principal, study: dict[str, Any]) -> bool:
    """Whether a clinic (or admin) may ask for a reading of ``study``."""
    if actor.role == "admin":
        return True
    return actor.role == "clinic" and study.get("organization") == actor.organization


def sees_report(actor: Principal, report: dict[str, Any]) -> bool:
    if actor.role == "admin":
        return True
    if actor.role == "clinic":
        return report.get("organization") == actor.organization
    if actor.role in ("reader", "coordinator"):
        return actor.centre is not None and report.get("centre") == actor.centre
    return False


# What a clinic is not shown of a request: the report before it is released (a draft, a junior's
# submission waiting for review, the reviewer's comment); it gets the released report (``reports``).
UNRELEASED = ("draft", "escalated_draft", "sent_back", "report_versions")


def request_view(actor: Principal, doc: dict[str, Any]) -> dict[str, Any]:
    if actor.role != "clinic":
        return doc
    return {k: v for k, v in doc.items() if k not in UNRELEASED}


# Versions a clinic sees: the released report and its addenda, not how it was written.
RELEASED_VERSIONS = ("sign", "countersign", "addendum")
