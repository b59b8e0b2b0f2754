"""The monitor service: a read model of queues, turnaround and volumes, fed only by events.

``readmodel`` (projection, no I/O) → ``service`` (consumer group ``monitor``, replay) →
``views`` (figures read back) → ``routes`` (JSON, SSE, ``/dashboard``) and ``instruments``
(``/metrics``).  See docs/monitor.md.
"""

from __future__ import annotations

from ..core.runtime import Runtime
from .service import MonitorService, MonitorSettings, replay

__all__ = ["MonitorService", "MonitorSettings", "build", "replay"]


def build(rt: Runtime) -> MonitorService:
    return MonitorService(rt)
