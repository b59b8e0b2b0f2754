"""One command's (or event's) context, shared by the reading and consultation services.

Who acts, from where, when, in which transaction, and the correlation id that the events
and audit records of the command carry.  Each service adds the shape of its own events
and audit records on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core import audit
from ..core.auth import Principal
from ..core.events import Event
from ..core.runtime import Runtime
from ..core.store.port import Transaction
from .leases import WorkflowSettings, iso

SETTINGS_KEY = "workflow.settings"


def settings_of(rt: Runtime) -> WorkflowSettings:
    """The workflow settings of this runtime (tests put theirs in ``rt.shared``)."""
    settings = rt.shared.get(SETTINGS_KEY)
    if settings is None:
        settings = rt.shared[SETTINGS_KEY] = WorkflowSettings.from_env()
    return settings


@dataclass
class CommandContext:
    rt: Runtime
    tx: Transaction
    actor: Principal
    remote: str | None
    now: float
    traceparent: str

    @property
    def at(self) -> str:
        return iso(self.now)

    @property
    def settings(self) -> WorkflowSettings:
        return settings_of(self.rt)

    def emit(self, type: str, subject: str, data: dict[str, Any]) -> Event:
        event = Event(type, subject=subject, data=data, source=self.rt.source("workflow"),
                      traceparent=self.traceparent)
        self.tx.emit(event)
        return event

    async def record(self, action: str, resource: str, organization: str | None, **detail: Any) -> None:
        await audit.record(self.tx, actor=self.actor.user_id, role=self.actor.role, action=action,
                           resource=resource, organization=organization, remote=self.remote,
                           detail=detail, traceparent=self.traceparent)
