"""The store port: documents in named collections, one atomic transaction, and the event log.

Repositories (one per aggregate, in the owning service) are written once against this
port; the SQLite and MongoDB adapters implement it and pass ``tests/contract/test_store.py``.

Documents are JSON objects keyed by ``id`` (a string).  Filters use a small, Mongo-shaped
language that both adapters implement exactly:

* ``{"field": value}`` equality (``None`` matches a missing or null field)
* ``{"field": {"$ne"|"$gt"|"$gte"|"$lt"|"$lte": value}}``, ``{"$in": [..]}``, ``{"$nin": [..]}``,
  ``{"$exists": bool}``, ``{"$prefix": "abc"}`` (string starts with)
* ``{"$or": [filter, ...]}``; several keys in one filter are AND-ed.

Field names may be dotted paths into nested objects.  Compared values are scalars
(strings, numbers, booleans); arrays are stored but not matched on.

The event log doubles as the transactional outbox: events emitted in a transaction are
committed with the state they describe and get a gap-free, increasing ``seq``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ..events import Event

Doc = dict[str, Any]
Filter = dict[str, Any]
Sort = Sequence[tuple[str, int]]


class StoreError(Exception):
    """Base class of store failures."""


class DuplicateKey(StoreError):
    """``insert`` of a document whose id (or unique index) already exists."""


class ConcurrentUpdate(StoreError):
    """A conditional write found the document changed underneath it."""


class StoreUnavailable(StoreError):
    """The database cannot be reached; nothing was written."""


@dataclass(frozen=True, slots=True)
class Index:
    fields: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    seq: int
    event: Event


@dataclass(slots=True)
class Batch:
    """What a ``decide`` function of :meth:`Store.apply` wants written, and what to hand back."""

    puts: list[tuple[str, Doc]] = field(default_factory=list)  # (collection, doc): insert or replace
    events: list[Event] = field(default_factory=list)
    result: Any = None


class Transaction(ABC):
    """Writes that commit together with the events they cause, or not at all."""

    @abstractmethod
    async def get(self, collection: str, id: str) -> Doc | None: ...

    @abstractmethod
    async def find(self, collection: str, where: Filter | None = None, *, sort: Sort = (),
                   limit: int | None = None) -> list[Doc]: ...

    @abstractmethod
    async def insert(self, collection: str, doc: Doc) -> None:
        """Insert ``doc``; raise :class:`DuplicateKey` if its id exists."""

    @abstractmethod
    async def put(self, collection: str, doc: Doc) -> None:
        """Insert or replace ``doc`` by id."""

    @abstractmethod
    async def update(self, collection: str, id: str, changes: Doc, *, where: Filter | None = None) -> bool:
        """Set top-level ``changes`` on document ``id`` if it exists and matches ``where``.

        Returns whether a document was changed: the compare-and-set used for leases.
        """

    @abstractmethod
    async def delete(self, collection: str, id: str) -> bool: ...

    @abstractmethod
    def emit(self, event: Event) -> None:
        """Append ``event`` to the event log when (and only if) this transaction commits."""

    async def first_time(self, group: str, event_id: str) -> bool:
        """Record that consumer ``group`` handled ``event_id``; False if it already had.

        Called inside the handler's transaction, so the record and the effect commit together.
        """
        try:
            await self.insert("handled_events", {"id": f"{group}|{event_id}", "group": group})
        except DuplicateKey:
            return False
        return True


class Store(ABC):
    """A database: collections of documents plus the durable event log."""

    url: str

    @abstractmethod
    async def open(self) -> None:
        """Connect, run migrations, create collections and indexes."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""

    @abstractmethod
    def transaction(self) -> Any:
        """``async with store.transaction() as tx:`` — commits on exit, rolls back on error."""

    @abstractmethod
    async def get(self, collection: str, id: str) -> Doc | None: ...

    def get_now(self, collection: str, id: str) -> Doc | None:
        """:meth:`get` without leaving the caller's thread: for a store whose point reads take
        microseconds (an embedded database), where a hand-off to a thread costs ten times the read.
        Raises ``NotImplementedError`` where a read is a network round trip (call :meth:`get`)."""
        raise NotImplementedError

    @abstractmethod
    async def find(self, collection: str, where: Filter | None = None, *, sort: Sort = (),
                   limit: int | None = None, offset: int = 0) -> list[Doc]: ...

    @abstractmethod
    async def count(self, collection: str, where: Filter | None = None) -> int: ...

    # --- the event log (outbox) -------------------------------------------------
    @abstractmethod
    async def read_log(self, after: int, *, limit: int = 500,
                       types: Sequence[str] | None = None) -> list[LoggedEvent]:
        """Events with ``seq > after`` in seq order, optionally only of ``types``."""

    @abstractmethod
    async def last_seq(self) -> int: ...

    @abstractmethod
    async def read_unrelayed(self, *, source: str | None = None, limit: int = 500) -> list[LoggedEvent]:
        """Events not yet relayed to an external bus (Kafka deployments)."""

    @abstractmethod
    async def mark_relayed(self, seqs: Sequence[int], *, relayed: bool = True) -> None:
        """Mark events relayed; ``relayed=False`` puts them back in the outbox (the broker lost them)."""

    @abstractmethod
    async def get_offset(self, group: str) -> int:
        """The last seq consumer ``group`` acknowledged (0 if none)."""

    @abstractmethod
    async def set_offset(self, group: str, seq: int) -> None: ...

    async def apply(self, reads: Sequence[tuple[str, str]], decide: Callable[[list[Doc | None]], Batch], *,
                    durable: bool = True) -> Any:
        """Read ``reads`` (collection, id), let ``decide`` turn them into a :class:`Batch`, commit it.

        One transaction: the documents ``decide`` saw are the ones its writes replace, and its
        events commit with them.  ``decide`` is pure (no I/O) and may run on the adapter's own
        thread; if it raises, nothing is written.  Returns ``Batch.result``.  Adapters may
        override this to do it all in one round trip (SQLite also commits concurrent calls
        together, one fsync for several).

        ``durable=False``: the caller can redo the writes after a power loss (the gateway's
        journal), so the commit may skip its fsync until :meth:`sync` or a later durable
        commit; it is visible, and survives a crash of the process, all the same.
        """
        async with self.transaction() as tx:
            batch = decide([await tx.get(collection, id) for collection, id in reads])
            for collection, doc in batch.puts:
                await tx.put(collection, doc)
            for event in batch.events:
                tx.emit(event)
        return batch.result

    async def sync(self) -> None:
        """Make every transaction committed so far durable (after ``durable=False`` applies)."""

    async def append(self, *events: Event) -> None:
        """Publish events with no state change of their own."""
        async with self.transaction() as tx:
            for event in events:
                tx.emit(event)


@asynccontextmanager
async def opened(store: Store) -> AsyncIterator[Store]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()
