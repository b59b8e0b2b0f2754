"""The outbox relay: publish events committed in store transactions to an external bus.

State and the events it causes commit together in the store's event log (the outbox).
The relay reads the events not yet relayed, in ``seq`` order, publishes them and only then
marks them relayed.  While the bus is down it retries with backoff and the events wait
in the outbox; a crash between publish and mark republishes them, which at-least-once
delivery and idempotent consumers absorb.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from ..events import InvalidEvent, utc_now
from ..store.port import DuplicateKey, LoggedEvent, Store
from .port import Bus, RetryPolicy

log = logging.getLogger("yilian.relay")

RELAY_GROUP = "outbox-relay"  # the ``group`` of dead letters the relay writes


class OutboxRelay:
    def __init__(self, store: Store, bus: Bus, sources: Sequence[str | None] = (None,), *,
                 poll_interval: float = 0.1, batch: int = 200, retry: RetryPolicy | None = None) -> None:
        self.store = store
        self.bus = bus
        # Each process relays the events its own services emitted; None relays every source.
        self.sources = list(sources) or [None]
        self.poll_interval = poll_interval
        self.batch = batch
        self.retry = retry or RetryPolicy(first_backoff=0.1, max_backoff=5.0)
        self.relayed = 0  # events published since start
        self.failures = 0  # consecutive failed attempts (0 while the bus is healthy)
        self._wakeup = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        self._wakeup.set()

    async def start(self) -> None:
        self._stopping = False
        self._stopped.clear()
        hooks = getattr(self.store, "on_commit", None)
        if hooks is not None and self.notify not in hooks:
            hooks.append(self.notify)
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        self.notify()
        if self._task is not None:
            # Let a publish in flight finish and be marked, then cancel.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=15)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        hooks = getattr(self.store, "on_commit", None)
        if hooks is not None and self.notify in hooks:
            hooks.remove(self.notify)

    async def relay_once(self) -> int:
        """Publish one batch per source; return how many events were relayed."""
        total = 0
        for source in self.sources:
            pending = await self.store.read_unrelayed(source=source, limit=self.batch)
            if not pending:
                continue
            try:
                await self.bus.publish(*(logged.event for logged in pending))
            except InvalidEvent:
                await self._publish_one_by_one(pending)
            await self.store.mark_relayed([logged.seq for logged in pending])
            total += len(pending)
        self.relayed += total
        return total

    async def _publish_one_by_one(self, pending: list[LoggedEvent]) -> None:
        """Find the event the bus refuses; keep it as a dead letter instead of blocking the outbox."""
        for logged in pending:
            try:
                await self.bus.publish(logged.event)
            except InvalidEvent as exc:
                log.error("outbox event refused by the bus, dead-lettered", extra={
                    "seq": logged.seq, "event_id": logged.event.id, "event_type": logged.event.type,
                    "reason": str(exc)})
                letter = {"id": f"{RELAY_GROUP}|{logged.event.id}", "group": RELAY_GROUP,
                          "type": logged.event.type, "subject": logged.event.subject,
                          "reason": f"invalid: {exc}", "attempts": 0, "trace": "", "time": utc_now(),
                          "envelope": logged.event.to_dict()}
                async with self.store.transaction() as tx:
                    with contextlib.suppress(DuplicateKey):
                        await tx.insert("dead_letters", letter)

    async def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                relayed = await self.relay_once()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - bus or store down: the events wait in the outbox
                self.failures += 1
                delay = self.retry.backoff(self.failures)
                log.warning("outbox relay failed, retrying", extra={
                    "attempt": self.failures, "retry_in_s": delay, "reason": repr(exc)})
                await self._sleep(delay, self._stopped)  # a commit does not cut the backoff short
                continue
            if relayed < self.batch:
                await self._sleep(self.poll_interval, self._wakeup)

    @staticmethod
    async def _sleep(seconds: float, wake: asyncio.Event) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=seconds)
