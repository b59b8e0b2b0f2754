"""The audit trail: who read or changed which patient data, when, and from where.

Records are written in the same transaction as the change they describe (or, for reads,
in their own), are append-only (no update or delete path exists in any API), and are
queried by auditors through the API.
"""

from __future__ import annotations

import uuid
from typing import Any

from .events import utc_now
from .store.port import Transaction


async def record(tx: Transaction, *, actor: str, role: str, action: str, resource: str,
                 organization: str | None = None, outcome: str = "success", remote: str | None = None,
                 detail: dict[str, Any] | None = None, traceparent: str | None = None) -> None:
    """Append one audit record.

    ``action`` is a dotted verb (``study.read``, ``reading.claim``); ``resource`` names what was
    touched (``study/1.2.3``, ``reading/<id>``); ``organization`` is the owner of the data.
    ``actor`` is a user id, or ``system:<service>`` for automatic transitions.
    """
    await tx.insert("audit", {
        "id": uuid.uuid4().hex, "time": utc_now(), "actor": actor, "role": role, "action": action,
        "resource": resource, "organization": organization, "outcome": outcome, "remote": remote,
        "detail": detail or {}, "traceparent": traceparent,
    })
