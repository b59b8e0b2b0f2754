"""The outbox relay: publish events committed in store transactions to an external bus.

State and the events it causes commit together in the store's event log (the outbox).
The relay reads the events not yet relayed, in ``seq`` order, publishes them and only then
marks them relayed.  While the bus is down it retries with backoff and the events wait
in the outbox; a crash between publish and mark republishes them, which at-least-once
delivery and idempotent consumers absorb.

The outbox is partitioned by event source (``/yilian/workflow`` …), and each partition is
relayed by the one process that holds its lease (a compare-and-set document in
``outbox_leases``, claimed like a delivery with :mod:`..claims`).  A process holds the
partitions of its own services as long as it lives; it takes another partition only while
nobody holds it and it has events waiting (the api writes the workflow's events, a
delivery process may be down), and gives it back once that backlog is relayed.  A dead
holder's lease expires and a live process takes over; two processes never relay the same
backlog at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta, timezone

from .. import claims
from ..events import InvalidEvent, utc_now
from ..holders import Holder
from ..metrics import Family, Sample
from ..store.port import DuplicateKey, LoggedEvent, Store
from .port import Bus, RetryPolicy

log = logging.getLogger("yilian.relay")

RELAY_GROUP = "outbox-relay"  # the ``group`` of dead letters the relay writes
LEASES = "outbox_leases"  # one document per partition (source) of the outbox
RELAYING = "relaying"  # a lease's busy state; "pending" is free, as claims.due expects
EVERY_SOURCE = "*"  # the lease of the one partition ``None`` stands for


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class OutboxRelay:
    def __init__(self, store: Store, bus: Bus, sources: Sequence[str | None] = (None,), *,
                 own: Collection[str | None] | None = None, lease_seconds: float = 10.0,
                 poll_interval: float = 0.1, batch: int = 200, retry: RetryPolicy | None = None,
                 remember: int = 100_000, holder: Holder | None = None) -> None:
        self.store = store
        self.bus = bus
        # The partitions this relay may relay (None: every source, as one partition) ...
        self.sources = list(sources) or [None]
        # ... and those it holds while it lives (its own services'; the others only on demand).
        self.own = set(self.sources if own is None else own)
        self.lease_seconds = lease_seconds
        # With a holder (core/holders.py) a dead process of this data directory is known to be
        # gone, and its partitions are taken at once rather than when their lease expires.
        self.holder = holder
        self.worker = holder.id if holder else f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.held: dict[str | None, int] = {}  # partition -> version of the lease document we hold
        self._renew_at = 0.0  # loop time of the next lease renewal and look for free partitions
        self._documents_ready = False
        self.poll_interval = poll_interval
        self.batch = batch
        self.retry = retry or RetryPolicy(first_backoff=0.1, max_backoff=5.0)
        self.relayed = 0  # events published since start
        # (seq, type) of the last events published: put back in the outbox if the broker loses them
        self.recent: collections.deque[tuple[int, str]] = collections.deque(maxlen=remember)
        self.published_again = 0
        self.failures = 0  # consecutive failed attempts (0 while the bus is healthy)
        self.failed_attempts = 0  # every failed attempt since start (a metric; only the first of a run is logged)
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
        # Give the partitions back, so a live process takes them now rather than at expiry.
        for source in list(self.held):
            with contextlib.suppress(Exception):
                await self._release(source)
        hooks = getattr(self.store, "on_commit", None)
        if hooks is not None and self.notify in hooks:
            hooks.remove(self.notify)

    # --- leases ------------------------------------------------------------------------
    @staticmethod
    def _lease_id(source: str | None) -> str:
        return EVERY_SOURCE if source is None else source

    def _source_of(self, lease_id: str) -> str | None:
        return None if lease_id == EVERY_SOURCE else lease_id

    def _expiry(self) -> str:
        return iso(datetime.now(timezone.utc) + timedelta(seconds=self.lease_seconds))

    async def _lease_documents(self) -> None:
        """One free lease document per partition, created by whoever comes first."""
        for source in self.sources:
            if await self.store.get(LEASES, self._lease_id(source)) is None:
                async with self.store.transaction() as tx:
                    with contextlib.suppress(DuplicateKey):
                        await tx.insert(LEASES, {"id": self._lease_id(source), "state": "pending",
                                                 "next_attempt_at": "", "lease_expires_at": None,
                                                 "worker": None, "version": 0})

    async def _renew(self) -> None:
        """Extend the leases held; note the ones lost (this process stalled past its lease)."""
        expires = self._expiry()
        for source, version in list(self.held.items()):
            async with self.store.transaction() as tx:
                kept = await tx.update(LEASES, self._lease_id(source),
                                       {"lease_expires_at": expires, "version": version + 1},
                                       where={"version": version, "worker": self.worker})
            if kept:
                self.held[source] = version + 1
            else:
                del self.held[source]
                log.warning("outbox partition lease lost", extra={"source": source, "worker": self.worker})

    async def _claim_free(self) -> None:
        """Take the free or expired partitions: our own always, another's if it has events waiting."""
        wanted = {self._lease_id(s) for s in self.sources}
        now = iso(datetime.now(timezone.utc))
        gone = self.holder.gone() if self.holder else ()
        for lease in await claims.due(self.store, LEASES, busy=RELAYING, now=now, room=len(self.sources),
                                      skip={self._lease_id(s) for s in self.held}, gone=gone):
            source = self._source_of(lease["id"])
            if lease["id"] not in wanted:
                continue
            if source not in self.own and not await self.store.read_unrelayed(source=source, limit=1):
                continue
            claimed = await claims.claim(self.store, LEASES, lease, busy=RELAYING, worker=self.worker,
                                         lease_expires_at=self._expiry())
            if claimed is None:
                continue  # another process got it first
            self.held[source] = claimed["version"]
            if lease["state"] == RELAYING:
                log.warning("outbox partition lease expired or its holder is gone; taking over",
                            extra={"source": source, "worker": lease["worker"]})

    async def _release(self, source: str | None) -> None:
        version = self.held.pop(source)
        async with self.store.transaction() as tx:
            await tx.update(LEASES, self._lease_id(source),
                            {"state": "pending", "worker": None, "lease_expires_at": None, "version": version + 1},
                            where={"version": version, "worker": self.worker})

    async def _leases(self) -> None:
        """Renew, and look for partitions to take, a few times per lease period."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._renew_at:
            return
        self._renew_at = loop.time() + self.lease_seconds / 5
        if not self._documents_ready:
            await self._lease_documents()
            self._documents_ready = True
        await self._renew()
        await self._claim_free()

    # --- relaying -----------------------------------------------------------------------
    async def relay_once(self) -> int:
        """Publish one batch per partition this relay holds; return how many events were relayed."""
        await self._leases()
        lost = self.bus.take_lost_topics()
        if lost:
            await self._publish_again(lost)
        total = 0
        for source in list(self.held):
            pending = await self.store.read_unrelayed(source=source, limit=self.batch)
            if not pending:
                if source not in self.own:
                    await self._release(source)  # its backlog is relayed: back to its own process
                continue
            try:
                await self.bus.publish(*(logged.event for logged in pending))
            except InvalidEvent:
                await self._publish_one_by_one(pending)
            await self.store.mark_relayed([logged.seq for logged in pending])
            self.recent.extend((logged.seq, logged.event.type) for logged in pending)
            total += len(pending)
        self.relayed += total
        return total

    async def _publish_again(self, topics: set[str]) -> None:
        """The broker lost ``topics`` (re-created after a restart): what this process published to
        them goes back in the outbox, in its ``seq`` order; consumers apply each event once."""
        seqs = [seq for seq, type in self.recent if self.bus.topic(type) in topics]
        if not seqs:
            return
        await self.store.mark_relayed(seqs, relayed=False)
        kept = [(seq, type) for seq, type in self.recent if self.bus.topic(type) not in topics]
        self.recent.clear()
        self.recent.extend(kept)
        self.published_again += len(seqs)
        log.warning("events the broker lost are published again", extra={
            "topics": sorted(topics), "events": len(seqs), "from_seq": seqs[0]})

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
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - bus or store down: the events wait in the outbox
                self.failures += 1
                self.failed_attempts += 1
                delay = self.retry.backoff(self.failures)
                if self.failures == 1:  # the first failure says why; the others are counted
                    log.warning("outbox relay failed, retrying", extra={
                        "attempt": self.failures, "retry_in_s": delay, "reason": repr(exc)})
                await self._sleep(delay, self._stopped)  # a commit does not cut the backoff short
                continue
            if self.failures:
                log.info("outbox relay resumed", extra={"failed_attempts": self.failures})
                self.failures = 0
            if relayed < self.batch:
                await self._sleep(self.poll_interval, self._wakeup)

    def figures(self) -> list[Family]:
        return [Family("yilian_outbox_relay_failed_attempts_total", "counter",
                       "Outbox relay attempts that failed (bus or store away) and were retried",
                       [Sample("yilian_outbox_relay_failed_attempts_total", {}, self.failed_attempts)]),
                Family("yilian_outbox_partitions_held", "gauge",
                       "Partitions (event sources) of the outbox this process relays now",
                       [Sample("yilian_outbox_partitions_held", {"source": str(s)}, 1) for s in sorted(
                           self.held, key=str)])]

    @staticmethod
    async def _sleep(seconds: float, wake: asyncio.Event) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=seconds)
