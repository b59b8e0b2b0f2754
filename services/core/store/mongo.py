"""MongoDB adapter of the store port: the scale-out deployment.

``mongodb://user@host1,host2/yilian?replicaSet=rs0&serverSelectionTimeoutMS=3000``.  The
database is the URL path (default ``yilian``); the password comes from the environment
through the URL, never from the repository.  One Mongo collection per declared collection
(:mod:`.schema`), the port's ``id`` stored as ``_id``.

Transactions.  On a replica set or sharded cluster a store transaction is a client session
with a multi-document transaction.  Its first write bumps the ``counters/event_log``
document, so concurrent writers (in any process) serialise on that document like SQLite's
``BEGIN IMMEDIATE``: a writer that finds it locked gets a transient write conflict, which
is retried with backoff *before* the caller's block runs.  At commit the events emitted in
the transaction take the next ``seq`` values from the same document (``$inc``) and are
inserted into ``event_log``, so seq order is commit order and a rolled-back transaction
leaves no gap.  A transient error after the caller's block has run cannot be retried here
(the block cannot be replayed) and surfaces as :class:`ConcurrentUpdate`.

Limitation without transactions (a standalone ``mongod``, and ``mongomock-motor`` in
tests): the same operations run without a session.  Writes apply at once and a rollback
undoes them from before-images, transactions are serialised within this process only,
and other readers can see a transaction's writes before it ends.  A crash in the middle
of a transaction can leave part of it applied.  Use a replica set in production (a
single-node one is enough; docker-compose runs one).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlparse

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import BulkWriteError, CollectionInvalid, ConnectionFailure, DuplicateKeyError, PyMongoError

from ..events import Event
from .port import (ConcurrentUpdate, Doc, DuplicateKey, Filter, LoggedEvent, Sort, Store,
                   StoreUnavailable, Transaction)
from .schema import COLLECTIONS, indexes

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "yilian"
DEFAULT_SERVER_SELECTION_MS = 5000
EVENT_LOG = "event_log"
COUNTERS = "counters"
OFFSETS = "consumer_offsets"
LOG_COUNTER = "event_log"
# How long a writer waits for the writer lock (the counter document) before giving up.
WRITER_WAIT_SECONDS = 30.0

_FIELD = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_COMPARE = {"$ne", "$gt", "$gte", "$lt", "$lte"}


def _field(name: str) -> str:
    if name == "id":
        return "_id"
    if not _FIELD.match(name):
        raise ValueError(f"bad field name {name!r}")
    return name


def _scalar(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        raise TypeError("filters compare scalars only")
    return value


def compile_filter(where: Filter | None) -> dict[str, Any]:
    """Translate the port's filter language into a MongoDB query.

    The port's semantics are Mongo's own (``None`` matches missing or null, ``$ne`` and
    ``$nin`` match missing fields), so this is mostly renaming; ``$prefix`` becomes an
    anchored regex, which an index on the field serves.
    """
    if not where:
        return {}
    clauses: list[dict[str, Any]] = []
    for key, cond in where.items():
        if key == "$or":
            subs = [compile_filter(sub) for sub in cond]
            # Mongo rejects an empty $or; the port defines it as matching nothing.
            clauses.append({"$or": subs} if subs else {"_id": {"$in": []}})
            continue
        field = _field(key)
        ops = cond if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond) else {"$eq": cond}
        for op, value in ops.items():
            if op == "$eq":
                clauses.append({field: _scalar(value)})
            elif op in _COMPARE:
                clauses.append({field: {op: _scalar(value)}})
            elif op in ("$in", "$nin"):
                clauses.append({field: {op: [_scalar(v) for v in value]}})
            elif op == "$exists":
                clauses.append({field: {"$exists": bool(value)}})
            elif op == "$prefix":
                if not isinstance(value, str):
                    raise TypeError("$prefix takes a string")
                clauses.append({field: {"$regex": "^" + re.escape(value)}})
            else:
                raise ValueError(f"unknown filter operator {op!r}")
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def compile_sort(sort: Sort) -> list[tuple[str, int]]:
    keys = [(_field(f), DESCENDING if d < 0 else ASCENDING) for f, d in sort]
    if not any(f == "_id" for f, _ in keys):
        keys.append(("_id", ASCENDING))  # a stable order, as SQLite's trailing ``id``
    return keys


def _to_port(doc: dict[str, Any] | None) -> Doc | None:
    if doc is None:
        return None
    return {"id": doc.pop("_id"), **doc}


def _to_mongo(doc: Doc) -> dict[str, Any]:
    body = {k: v for k, v in doc.items() if k != "id"}
    return {"_id": doc["id"], **body}


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = urlparse(url)
    hosts = parsed.netloc.rsplit("@", 1)[-1]
    return f"{parsed.scheme}://{hosts}{parsed.path}"


def database_name(url: str) -> str:
    return urlparse(url).path.lstrip("/") or DEFAULT_DATABASE


class MongoTransaction(Transaction):
    def __init__(self, store: MongoStore, session: Any | None) -> None:
        self._store = store
        self._session = session
        self._kw: dict[str, Any] = {"session": session} if session is not None else {}
        self._events: list[Event] = []
        # Without a server transaction: how to undo each write, newest last.
        self._undo: list[Callable[[], Awaitable[Any]]] = []

    def _col(self, collection: str) -> Any:
        return self._store._col(collection)

    async def get(self, collection: str, id: str) -> Doc | None:
        col = self._col(collection)
        with self._store._errors(collection):
            return _to_port(await col.find_one({"_id": id}, **self._kw))

    async def find(self, collection: str, where: Filter | None = None, *, sort: Sort = (),
                   limit: int | None = None) -> list[Doc]:
        return await self._store._find(self._col(collection), where, sort, limit, 0, self._kw)

    async def _before(self, col: Any, id: str) -> dict[str, Any] | None:
        return None if self._session is not None else await col.find_one({"_id": id})

    def _restore(self, col: Any, id: str, before: dict[str, Any] | None) -> None:
        if self._session is not None:
            return
        if before is None:
            self._undo.append(lambda: col.delete_one({"_id": id}))
        else:
            self._undo.append(lambda: col.replace_one({"_id": id}, before, upsert=True))

    async def insert(self, collection: str, doc: Doc) -> None:
        col = self._col(collection)
        with self._store._errors(f"{collection}/{doc['id']}"):
            if self._session is not None and await col.find_one({"_id": doc["id"]}, {"_id": 1}, **self._kw):
                # A duplicate-key error would abort the server transaction; first_time()
                # and callers like it go on using the transaction after DuplicateKey.
                raise DuplicateKey(f"{collection}/{doc['id']}: duplicate id")
            await col.insert_one(_to_mongo(doc), **self._kw)
        self._restore(col, doc["id"], None)

    async def put(self, collection: str, doc: Doc) -> None:
        col = self._col(collection)
        with self._store._errors(f"{collection}/{doc['id']}"):
            before = await self._before(col, doc["id"])
            await col.replace_one({"_id": doc["id"]}, _to_mongo(doc), upsert=True, **self._kw)
        self._restore(col, doc["id"], before)

    async def update(self, collection: str, id: str, changes: Doc, *, where: Filter | None = None) -> bool:
        col = self._col(collection)
        for field in changes:
            if field == "id" or not re.fullmatch(r"[A-Za-z0-9_]+", field):
                raise ValueError(f"cannot update field {field!r}")
        query = compile_filter(where)
        query = {"$and": [{"_id": id}, query]} if query else {"_id": id}
        with self._store._errors(f"{collection}/{id}"):
            before = await self._before(col, id)
            # One server-side compare-and-set: the filter and the $set are atomic together.
            result = await col.update_one(query, {"$set": dict(changes)}, **self._kw)
        if result.matched_count != 1:
            return False
        self._restore(col, id, before)
        return True

    async def delete(self, collection: str, id: str) -> bool:
        col = self._col(collection)
        with self._store._errors(f"{collection}/{id}"):
            before = await self._before(col, id)
            result = await col.delete_one({"_id": id}, **self._kw)
        if result.deleted_count != 1:
            return False
        if before is not None:
            self._undo.append(lambda: col.replace_one({"_id": id}, before, upsert=True))
        return True

    def emit(self, event: Event) -> None:
        self._store.validate(event)
        self._events.append(event)

    async def _flush_events(self) -> None:
        if not self._events:
            return
        n = len(self._events)
        counters = self._store._db[COUNTERS]
        with self._store._errors(EVENT_LOG):
            counter = await counters.find_one_and_update(
                {"_id": LOG_COUNTER}, {"$inc": {"seq": n}}, upsert=True,
                return_document=ReturnDocument.AFTER, **self._kw)
        if self._session is None:
            self._undo.append(lambda: counters.update_one({"_id": LOG_COUNTER}, {"$inc": {"seq": -n}}))
        first = counter["seq"] - n + 1
        docs = [{"_id": first + i, "event_id": e.id, "type": e.type, "subject": e.subject,
                 "source": e.source, "envelope": e.to_json(), "relayed": False}
                for i, e in enumerate(self._events)]
        if self._session is None:
            # Registered first: a failed insert_many may have inserted some of them.
            seqs = [d["_id"] for d in docs]
            self._undo.append(lambda: self._store._db[EVENT_LOG].delete_many({"_id": {"$in": seqs}}))
        try:
            await self._store._db[EVENT_LOG].insert_many(docs, ordered=True, **self._kw)
        except DuplicateKeyError as exc:
            raise ConcurrentUpdate(f"event log: an event id is already logged: {exc}") from exc
        except BulkWriteError as exc:
            if any(e.get("code") == 11000 for e in exc.details.get("writeErrors", [])):
                raise ConcurrentUpdate(f"event log: an event id is already logged: {exc}") from exc
            raise
        except ConnectionFailure as exc:
            raise self._store._unavailable(exc) from exc

    async def _rollback_without_session(self) -> None:
        for undo in reversed(self._undo):
            await undo()
        self._undo.clear()


class MongoStore(Store):
    """``mongodb://[user:password@]host[:port][,host...]/[database][?options]``.

    ``client`` injects an async client (tests use ``mongomock_motor.AsyncMongoMockClient``);
    ``database`` overrides the database named in the URL.
    """

    def __init__(self, url: str, *, validate: Callable[[Event], None] | None = None,
                 client: Any | None = None, database: str | None = None) -> None:
        self.url = url
        self.database = database or database_name(url)
        self._validate = validate
        self._owns_client = client is None
        if client is None:
            options = {k.lower() for k, _ in parse_qsl(urlparse(url).query)}
            kwargs: dict[str, Any] = {"appname": "yilian"} if "appname" not in options else {}
            if "serverselectiontimeoutms" not in options:
                kwargs["serverSelectionTimeoutMS"] = DEFAULT_SERVER_SELECTION_MS
            # The client connects lazily: a bad host surfaces in open(), not here.
            client = AsyncMongoClient(url, **kwargs)
        self._client = client
        self._db = client[self.database]
        self._where = f"{_redact(url)} (database {self.database})"
        # Whether the server runs multi-document transactions; decided by open().
        self.transactions = False
        self._tx_lock = asyncio.Lock()
        self.on_commit: list[Callable[[], None]] = []

    @property
    def db(self) -> Any:
        """The async database, for adapters that share it (GridFS blobs)."""
        return self._db

    def validate(self, event: Event) -> None:
        if self._validate is not None:
            self._validate(event)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"MongoDB {self._where} is unreachable: {exc}")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except DuplicateKeyError as exc:
            raise DuplicateKey(f"{what}: {exc.details.get('errmsg', exc) if exc.details else exc}") from None
        except ConnectionFailure as exc:
            raise self._unavailable(exc) from exc

    def _col(self, collection: str) -> Any:
        if collection not in COLLECTIONS:
            raise KeyError(f"collection {collection!r} is not declared in services/core/store/schema.py")
        return self._db[collection]

    # --- lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        with self._errors("open"):
            await self.ping()
            self.transactions = await self._supports_transactions()
            existing = set(await self._db.list_collection_names())
            for name in [*COLLECTIONS, EVENT_LOG, COUNTERS, OFFSETS]:
                if name not in existing:
                    try:
                        # Up front: creating a collection inside a transaction fails on older
                        # servers and on sharded clusters.
                        await self._db.create_collection(name)
                    except CollectionInvalid:
                        pass  # another process created it first
            for collection in COLLECTIONS:
                col = self._db[collection]
                for ix in indexes(collection):
                    name = f"ix_{'_'.join(f.replace('.', '_') for f in ix.fields)}"
                    await col.create_index([(_field(f), ASCENDING) for f in ix.fields],
                                           unique=ix.unique, name=name)
            log_col = self._db[EVENT_LOG]
            await log_col.create_index([("event_id", ASCENDING)], unique=True, name="ix_event_id")
            await log_col.create_index([("type", ASCENDING), ("_id", ASCENDING)], name="ix_type_seq")
            await log_col.create_index([("relayed", ASCENDING), ("source", ASCENDING), ("_id", ASCENDING)],
                                       name="ix_unrelayed")
            try:
                # The counter exists before any transaction, so none has to create it.
                await self._db[COUNTERS].update_one(
                    {"_id": LOG_COUNTER}, {"$setOnInsert": {"seq": 0, "writers": 0}}, upsert=True)
            except DuplicateKeyError:
                pass  # another process created it first
        if not self.transactions and self._owns_client:
            log.warning("MongoDB without transactions: state and events are not written atomically",
                        extra={"store": self._where})

    async def _supports_transactions(self) -> bool:
        if not isinstance(self._client, AsyncMongoClient):
            return False  # mongomock-motor: no sessions
        hello = await self._client.admin.command("hello")
        return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()

    async def ping(self) -> None:
        try:
            await self._client.admin.command("ping")
        except NotImplementedError:
            await self._db.list_collection_names()  # mongomock has no ping command
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    # --- transactions ------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MongoTransaction]:
        # In-process writers queue here instead of conflicting on the server.
        async with self._tx_lock:
            if self.transactions:
                async with self._session_transaction() as tx:
                    yield tx
            else:
                tx = MongoTransaction(self, None)
                try:
                    yield tx
                    await tx._flush_events()
                except BaseException:
                    await asyncio.shield(tx._rollback_without_session())
                    raise
        if tx._events:
            for callback in self.on_commit:
                callback()

    @asynccontextmanager
    async def _session_transaction(self) -> AsyncIterator[MongoTransaction]:
        session = self._client.start_session()
        try:
            await self._begin(session)
            tx = MongoTransaction(self, session)
            try:
                yield tx
                await tx._flush_events()
            except BaseException as exc:
                if session.in_transaction:
                    await asyncio.shield(self._abort(session))
                if isinstance(exc, PyMongoError) and exc.has_error_label("TransientTransactionError"):
                    raise ConcurrentUpdate(f"transaction aborted by a conflicting write: {exc}") from exc
                if isinstance(exc, ConnectionFailure):
                    raise self._unavailable(exc) from exc
                raise
            await asyncio.shield(self._commit(session))
        finally:
            await session.end_session()

    async def _begin(self, session: Any) -> None:
        """Start the transaction holding the writer lock, retrying transient conflicts."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITER_WAIT_SECONDS
        delay = 0.005
        while True:
            await session.start_transaction()
            try:
                await self._db[COUNTERS].update_one({"_id": LOG_COUNTER}, {"$inc": {"writers": 1}},
                                                    session=session)
                return
            except PyMongoError as exc:
                await self._abort(session)
                if isinstance(exc, ConnectionFailure) and not exc.has_error_label("TransientTransactionError"):
                    raise self._unavailable(exc) from exc
                if not exc.has_error_label("TransientTransactionError"):
                    raise
                if loop.time() > deadline:
                    raise ConcurrentUpdate(f"no writer lock after {WRITER_WAIT_SECONDS}s: {exc}") from exc
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.25)

    async def _commit(self, session: Any) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITER_WAIT_SECONDS
        while True:
            try:
                await session.commit_transaction()
                return
            except PyMongoError as exc:
                if exc.has_error_label("UnknownTransactionCommitResult") and loop.time() < deadline:
                    continue  # committing again is safe: the server dedupes by transaction number
                if exc.has_error_label("TransientTransactionError"):
                    raise ConcurrentUpdate(f"commit aborted by a conflicting write: {exc}") from exc
                if isinstance(exc, ConnectionFailure):
                    raise self._unavailable(exc) from exc
                raise

    @staticmethod
    async def _abort(session: Any) -> None:
        try:
            if session.in_transaction:
                await session.abort_transaction()
        except PyMongoError:
            pass  # the server drops an abandoned transaction by itself

    # --- reads -------------------------------------------------------------------
    async def _find(self, col: Any, where: Filter | None, sort: Sort, limit: int | None, offset: int,
                    kw: dict[str, Any]) -> list[Doc]:
        if limit == 0:
            return []  # Mongo's limit(0) means "no limit"
        cursor = col.find(compile_filter(where), **kw).sort(compile_sort(sort))
        if offset:
            cursor = cursor.skip(offset)
        if limit is not None:
            cursor = cursor.limit(limit)
        with self._errors(col.name):
            return [_to_port(d) for d in await cursor.to_list(None)]

    async def get(self, collection: str, id: str) -> Doc | None:
        col = self._col(collection)
        with self._errors(collection):
            return _to_port(await col.find_one({"_id": id}))

    async def find(self, collection: str, where: Filter | None = None, *, sort: Sort = (),
                   limit: int | None = None, offset: int = 0) -> list[Doc]:
        return await self._find(self._col(collection), where, sort, limit, offset, {})

    async def count(self, collection: str, where: Filter | None = None) -> int:
        col = self._col(collection)
        with self._errors(collection):
            return await col.count_documents(compile_filter(where))

    # --- event log -----------------------------------------------------------------
    async def _read_events(self, query: dict[str, Any], limit: int) -> list[LoggedEvent]:
        if limit <= 0:
            return []
        cursor = self._db[EVENT_LOG].find(query, {"envelope": 1}).sort([("_id", ASCENDING)]).limit(limit)
        with self._errors(EVENT_LOG):
            rows = await cursor.to_list(None)
        return [LoggedEvent(row["_id"], Event.from_json(row["envelope"])) for row in rows]

    async def read_log(self, after: int, *, limit: int = 500,
                       types: Sequence[str] | None = None) -> list[LoggedEvent]:
        query: dict[str, Any] = {"_id": {"$gt": after}}
        if types:
            query["type"] = {"$in": list(types)}
        return await self._read_events(query, limit)

    async def last_seq(self) -> int:
        with self._errors(EVENT_LOG):
            row = await self._db[EVENT_LOG].find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)])
        return row["_id"] if row else 0

    async def read_unrelayed(self, *, source: str | None = None, limit: int = 500) -> list[LoggedEvent]:
        query: dict[str, Any] = {"relayed": False}
        if source is not None:
            query["source"] = source
        return await self._read_events(query, limit)

    async def mark_relayed(self, seqs: Sequence[int], *, relayed: bool = True) -> None:
        if not seqs:
            return
        with self._errors(EVENT_LOG):
            await self._db[EVENT_LOG].update_many({"_id": {"$in": list(seqs)}}, {"$set": {"relayed": relayed}})

    async def get_offset(self, group: str) -> int:
        with self._errors(OFFSETS):
            row = await self._db[OFFSETS].find_one({"_id": group})
        return row["seq"] if row else 0

    async def set_offset(self, group: str, seq: int) -> None:
        with self._errors(OFFSETS):
            try:
                # $max: an offset only moves forward, even when acknowledgements race.
                await self._db[OFFSETS].update_one({"_id": group}, {"$max": {"seq": seq}}, upsert=True)
            except DuplicateKeyError:
                # Two first upserts raced; the document exists now.
                await self._db[OFFSETS].update_one({"_id": group}, {"$max": {"seq": seq}})
