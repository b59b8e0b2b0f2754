"""Audit records of reads, committed in groups.

Each request still waits until its own record is durable (nothing is answered before it is
audited), but records of concurrent requests share one transaction: one commit (fsync) for
many readers instead of one each, and one update of the audit chain's head.  A group is written
with :meth:`Store.apply`, which the SQLite adapter does in one hop to its writer thread (not one
per record) and commits together with other ``apply`` calls waiting for the writer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..core import audit
from ..core.store.port import Batch, Doc, Store


class AuditWriter:
    def __init__(self, store: Store, *, max_batch: int = 500) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def record(self, **fields: Any) -> None:
        """Append one record (``services.core.audit.record``'s arguments); returns once committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((fields, done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        # While one group commits, the next one gathers.
        while self._pending:
            group, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                await self._write(group)
            except Exception:  # noqa: BLE001 - one bad record must not fail its neighbours: one by one
                for one in group:
                    try:
                        await self._write([one])
                    except Exception as exc:  # noqa: BLE001 - its waiter learns it was not written
                        if not one[1].done():
                            one[1].set_exception(exc)
            for _, done in group:
                if not done.done():
                    done.set_result(None)

    async def _write(self, group: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        records = [audit.new_record(**fields) for fields, _ in group]

        def chain(docs: list[Doc | None]) -> Batch:
            # Linked inside the commit, after the head it read: any writer in any process is either
            # wholly before or wholly after this group.
            head, linked = audit.link(docs[0], records)
            return Batch(puts=[*(("audit", doc) for doc in linked), (audit.CHAIN, head)])
        await self.store.apply([(audit.CHAIN, audit.HEAD)], chain)
