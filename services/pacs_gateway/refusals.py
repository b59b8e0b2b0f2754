"""What the gateway turned away, kept for the sending clinic to see (``GET /api/v1/gateway/refusals``).

A C-STORE refused (the status and Error Comment the sender got) and an acknowledged instance set
aside in quarantine are noted here besides the log line they always had.  Refusals are noted from
the receiving thread or coroutine without waiting (a bounded buffer) and written in batches by
one task, so a sender whose every instance is refused cannot slow the gateway with store writes;
past the buffer's bound the oldest unwritten are counted and given up (the log line stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from typing import Any

from ..core.events import utc_now
from ..core.store.port import Store

log = logging.getLogger("yilian.pacs_gateway")

COLLECTION = "gateway_refusals"
BOUND = 10_000  # unwritten notes held at most
BATCH = 500


def note_doc(*, kind: str, organization: str | None, calling_ae: str, sop_instance_uid: str, status: int | None,
             reason: str, study_uid: str | None = None, peer: str | None = None) -> dict[str, Any]:
    """``kind``: ``refused`` (the sender got ``status``) or ``quarantined`` (it got Success; set aside)."""
    return {"id": "gr-" + uuid.uuid4().hex[:20], "kind": kind, "organization": organization,
            "calling_ae": calling_ae, "peer": peer, "sop_instance_uid": sop_instance_uid, "study_uid": study_uid,
            "status": f"0x{status:04X}" if status is not None else None, "reason": reason, "at": utc_now()}


async def write(store: Store, docs: list[dict[str, Any]]) -> None:
    async with store.transaction() as tx:
        for doc in docs:
            await tx.put(COLLECTION, doc)


class Refusals:
    def __init__(self, store: Store, *, interval: float = 0.5) -> None:
        self.store, self.interval = store, interval
        self.pending: deque[dict[str, Any]] = deque()
        self.given_up = 0
        self._task: asyncio.Task[None] | None = None

    def note(self, **fields: Any) -> None:
        """From any thread; never blocks."""
        if len(self.pending) >= BOUND:
            self.given_up += 1
            with contextlib.suppress(IndexError):
                self.pending.popleft()
        self.pending.append(note_doc(**fields))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pacs_gateway:refusals")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def flush(self) -> None:
        while self.pending:
            batch = [self.pending.popleft() for _ in range(min(BATCH, len(self.pending)))]
            try:
                await write(self.store, batch)
            except Exception:
                self.pending.extendleft(reversed(batch))  # the store may come back
                raise

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - kept for the next round
                log.exception("could not write the gateway's refusals", extra={"pending": len(self.pending)})
            if self.given_up:
                log.warning("gateway refusals given up unwritten (the log has each)", extra={"count": self.given_up})
                self.given_up = 0
