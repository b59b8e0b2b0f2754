"""The embedded bus: in-process consumers reading the store's durable event log.

The log is the outbox, so nothing needs relaying: an event is published the moment the
transaction that emitted it commits.  Each consumer group keeps its offset in the store
and commits it after each handled event, so after a crash or ``kill -9`` every event not
yet acknowledged is delivered again.  Other processes sharing the database (gateway
workers) append to the same log; consumers poll for their events as well as waking on
local commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ..events import Event
from ..store.port import DuplicateKey, Store
from .consumer import handle
from .port import Bus, BusUnavailable, RetryPolicy, Subscription

log = logging.getLogger("yilian.bus")


class EmbeddedBus(Bus):
    def __init__(self, store: Store, *, validate: Callable[[Event], None],
                 retry: RetryPolicy | None = None, poll_interval: float = 0.2, batch: int = 200) -> None:
        super().__init__()
        self.store = store
        self._validate = validate
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.batch = batch
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeups: list[asyncio.Event] = []
        self._stopping = False

    @property
    def relays_outbox(self) -> bool:
        return False

    def notify(self) -> None:
        for wakeup in self._wakeups:
            wakeup.set()

    async def start(self) -> None:
        self._stopping = False
        hooks = getattr(self.store, "on_commit", None)
        if hooks is not None and self.notify not in hooks:
            hooks.append(self.notify)
        for sub in self.subscriptions:
            wakeup = asyncio.Event()
            self._wakeups.append(wakeup)
            self._tasks.append(asyncio.create_task(self._consume(sub, wakeup), name=f"consume:{sub.group}"))

    async def stop(self) -> None:
        self._stopping = True
        self.notify()
        for task in self._tasks:
            # A consumer finishes the event in hand; give it a moment, then cancel.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout=5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._wakeups.clear()
        hooks = getattr(self.store, "on_commit", None)
        if hooks is not None and self.notify in hooks:
            hooks.remove(self.notify)

    async def publish(self, *events: Event) -> None:
        for event in events:
            self._validate(event)
        try:
            await self.store.append(*events)
        except Exception as exc:
            raise BusUnavailable(f"event log unavailable: {exc}") from exc

    async def ping(self) -> None:
        try:
            await self.store.ping()
        except Exception as exc:
            raise BusUnavailable(str(exc)) from exc

    async def lag(self) -> dict[str, int]:
        last = await self.store.last_seq()
        out: dict[str, int] = {}
        for sub in self.subscriptions:
            offset = await self.store.get_offset(sub.group)
            out[sub.group] = len(await self.store.read_log(offset, limit=100_000, types=sub.types)) \
                if offset < last else 0
        return out

    async def _dead_letter(self, letter: dict) -> None:
        async with self.store.transaction() as tx:
            try:
                await tx.insert("dead_letters", letter)
            except DuplicateKey:
                pass

    async def _consume(self, sub: Subscription, wakeup: asyncio.Event) -> None:
        offset = await self.store.get_offset(sub.group)
        while not self._stopping:
            wakeup.clear()
            try:
                batch = await self.store.read_log(offset, limit=self.batch, types=sub.types)
            except Exception:  # noqa: BLE001 - the database may come back
                log.exception("event log read failed", extra={"group": sub.group})
                await asyncio.sleep(self.retry.max_backoff)
                continue
            for logged in batch:
                if self._stopping:
                    return
                await handle(sub, logged.event, validate=self._validate, retry=self.retry,
                             dead_letter=self._dead_letter)
                await self.store.set_offset(sub.group, logged.seq)
                offset = logged.seq
            if len(batch) < self.batch:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=self.poll_interval)
