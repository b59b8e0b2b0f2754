"""What can go wrong with a workflow command, each mapped to one HTTP status by the API.

| error | HTTP | meaning |
|---|---|---|
| :class:`NotFound` | 404 | no such thing, or the caller may not know it exists |
| :class:`Forbidden` | 403 (or 404) | the caller sees it but his role may not do this |
| :class:`IllegalTransition` | 409 | the state machine does not allow this action now |
| :class:`Conflict` | 409 | someone else holds the lease, or won a race |
| :class:`Invalid` | 422 | the command's values are wrong |
"""

from __future__ import annotations


class WorkflowError(Exception):
    """Base class: the command was rejected and nothing changed."""

    status = 400


class NotFound(WorkflowError):
    status = 404


class Forbidden(WorkflowError):
    status = 403


class IllegalTransition(WorkflowError):
    """``action`` is not allowed in ``state``; the message names both."""

    status = 409

    def __init__(self, state: str, action: str, detail: str = "", *, what: str = "a reading request") -> None:
        self.state, self.action = state, action
        super().__init__(f"cannot {action} {what} in state {state!r}" + (f": {detail}" if detail else ""))


class Conflict(WorkflowError):
    status = 409


class Invalid(WorkflowError):
    status = 422
