"""Indexing journaled instances in batches: their blob files, then one store transaction for many.

The C-STORE was answered once the instance's journal record was durable (:mod:`.ingest`);
from there the indexer takes every instance waiting, writes their blob files (threads, no
fsync: the journal still holds the bytes) and indexes them all in one :meth:`Store.apply`,
where a series or study shared by the batch is read and written once instead of once per
instance.  Then each record is marked indexed in the journal, whose segments are recycled
once the blob store and the store have been synced (:meth:`Ingest.sync`).

An instance is visible to C-FIND, QIDO-RS and the other services once its batch commits —
milliseconds after its C-STORE-RSP (docs/performance.md).  If the store fails, the batch is
retried with backoff; nothing waiting is lost, and a crash leaves it to the journal's replay.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.store.port import StoreUnavailable
from . import model
from .journal import Written

if TYPE_CHECKING:
    from .ingest import Ingest, Prepared

log = logging.getLogger("yilian.pacs_gateway.indexer")

MAX_BATCH = 256
MAX_WAITING_BYTES = 64 << 20  # past this, C-STOREs wait for the indexer: memory stays bounded
RETRY_FIRST, RETRY_MAX = 0.05, 5.0
STOP_WAIT = 10.0  # a stop waits this long for the indexer to catch up
# A batch of one costs about twice the CPU per instance of a batch of sixteen (a thread hand-off
# for the blob files and one for the transaction, whatever the batch size): with fewer than
# LINGER_BELOW waiting, the indexer lets more arrive for LINGER_SECONDS.  Visibility stays within
# milliseconds of the C-STORE-RSP.
LINGER_SECONDS = 0.02
LINGER_BELOW = 16


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the store or the disk being unavailable (retry), not something about the data."""
    return (isinstance(exc, (OSError, TimeoutError, StoreUnavailable))
            or type(exc).__module__.split(".")[0] in ("sqlite3", "pymongo") and "Integrity" not in type(exc).__name__)


@dataclass(frozen=True, slots=True)
class Waiting:
    """A journaled instance not indexed yet."""

    prepared: Prepared
    received_at: str
    written: Written | None  # None: replayed from an earlier run's journal, or from another process's
    write_blob: bool = True  # False: a replayed staging file already moved into place
    on_indexed: Callable[[], None] | None = None  # instead of marking ``written``: another process's record
    meta: bytes | None = None  # the journal record's encoded meta, when at hand (index_process sends it)

    @property
    def key(self) -> str:
        return model.blob_key(self.prepared.header, self.prepared.sha256)

    @property
    def memory(self) -> int:
        return self.prepared.size if self.prepared.received.in_memory else 0


class Backlog:
    """Instances answered and not indexed yet, oldest first, each under a number: bounded (a
    C-STORE-RSP waits while ``MAX_WAITING_BYTES`` of them are held in memory) and looked up by SOP
    Instance UID.  The in-process indexer works through its own; a receiving process keeps one of
    what it forwarded to the indexer process until that acknowledges it (:mod:`.index_process`)."""

    def __init__(self) -> None:
        self._items: dict[int, Waiting] = {}
        self._next = 0
        self._bytes = 0
        self._by_sop: dict[str, Waiting] = {}  # the latest waiting copy of each SOP Instance UID
        self._changed = asyncio.Condition()
        self.busy = False  # the indexer holds some of them in a batch being indexed

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def waiting(self, sop_instance_uid: str) -> Waiting | None:
        return self._by_sop.get(sop_instance_uid)

    def oldest(self, limit: int) -> list[tuple[int, Waiting]]:
        return list(itertools.islice(self._items.items(), limit))

    async def add(self, item: Waiting) -> int:
        async with self._changed:
            # Backpressure: while indexing is far behind, the C-STORE-RSP waits.
            await self._changed.wait_for(lambda: self._bytes < MAX_WAITING_BYTES or not self._items)
            self._next += 1
            self._items[self._next] = item
            self._bytes += item.memory
            self._by_sop[item.prepared.header.sop_instance_uid] = item
            return self._next

    async def remove(self, numbers: Iterable[int]) -> list[Waiting]:
        """Take out what is indexed (numbers already gone are skipped); returns the items taken."""
        removed = []
        async with self._changed:
            for number in numbers:
                item = self._items.pop(number, None)
                if item is None:
                    continue
                removed.append(item)
                self._bytes -= item.memory
                sop = item.prepared.header.sop_instance_uid
                if self._by_sop.get(sop) is item:
                    del self._by_sop[sop]
            self.busy = False
            self._changed.notify_all()
        return removed

    async def settled(self) -> None:
        """Return once everything added so far is indexed."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._items and not self.busy)


class Indexing:
    """What indexes the instances a process answered: its backlog, a task working through it, and
    how to wait for it.  :class:`Indexer` indexes here; :class:`~.index_process.IndexClient` has
    the indexer process do it."""

    task_name = "pacs_gateway:indexing"

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.backlog = Backlog()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        self.quarantined = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self, timeout: float | None = None) -> None:
        """Index everything waiting (for up to ``timeout`` seconds, default ``STOP_WAIT``: the store
        may be away), then stop.  What is left, the journal replays at the next start."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.settled(), STOP_WAIT if timeout is None else timeout)
        except TimeoutError:
            log.warning("stopping with instances not indexed yet; the journal replays them at the next start",
                        extra={"instances": len(self.backlog), "indexing": self.task_name})
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    def waiting(self, sop_instance_uid: str) -> Waiting | None:
        return self.backlog.waiting(sop_instance_uid)

    async def submit(self, item: Waiting) -> None:
        raise NotImplementedError

    async def settled(self) -> None:
        """Return once everything submitted so far is indexed."""
        await self.backlog.settled()

    def stats(self) -> dict[str, Any]:
        return {"waiting": len(self.backlog), "waiting_bytes": self.backlog.bytes, "failures": self.failures,
                "quarantined": self.quarantined}

    async def _run(self) -> None:
        raise NotImplementedError


class Indexer(Indexing):
    task_name = "pacs_gateway:indexer"

    def __init__(self, ingest: Ingest) -> None:
        super().__init__(ingest)
        self._wake = asyncio.Event()

    async def submit(self, item: Waiting) -> None:
        await self.backlog.add(item)
        self._wake.set()

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            await self._wake.wait()
            if len(self.backlog) < LINGER_BELOW:
                await asyncio.sleep(LINGER_SECONDS)
            self._wake.clear()
            while self.backlog:
                numbered = self.backlog.oldest(MAX_BATCH)
                batch = [item for _, item in numbered]
                self.backlog.busy = True
                try:
                    done, error = await self._index(batch)
                except asyncio.CancelledError:
                    self.backlog.busy = False
                    raise
                await self.backlog.remove(number for number, _ in numbered[:done])
                if error is not None:
                    self.failures += 1
                    log.error("indexing failed; the instances stay in the journal and are retried",
                              extra={"instances": len(batch) - done, "retry_in_seconds": delay,
                                     "error": repr(error)})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                else:
                    delay = RETRY_FIRST

    async def _index(self, batch: list[Waiting]) -> tuple[int, BaseException | None]:
        """Index ``batch``; returns how many from its front are done, and the error that stopped the rest."""
        try:
            await self.ingest.index_batch(batch)
            return len(batch), None
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if transient(exc):
                return 0, exc
            failed: BaseException = exc
        # Not the store being away: one instance the index cannot take must not hold up the rest.
        # One by one; an instance that fails on its own is set aside (quarantine), never dropped.
        for n, item in enumerate(batch):
            try:
                await self.ingest.index_batch([item])
            except Exception as exc:  # noqa: BLE001
                if transient(exc):
                    return n, exc
                try:
                    await self.ingest.quarantine(item, exc)
                except Exception as cannot:  # noqa: BLE001 - e.g. the disk is full: try it all again later
                    return n, cannot
                self.quarantined += 1
                failed = exc
        log.debug("batch indexed one by one", extra={"instances": len(batch), "error": repr(failed)})
        return len(batch), None

