"""SQLite adapter of the store port: the embedded default.

One file, WAL mode, one table per collection (``id`` + JSON ``doc``) with expression
indexes from :mod:`.schema`.  Writes go through one connection on one thread, so the
event loop never blocks on disk; reads use reader connections, one per thread
(``?readers=N``, default 1), which WAL lets run beside the writer and each other.  More than
one keeps a slow scan from holding up every other read, but on two cores the reader threads
contend for the GIL (decoding JSON): the worklist benchmark served 385 reads/s with one
reader, 260-270 with two or four.  Several processes (gateway workers) may share the file: writers
queue on SQLite's lock with a busy timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

from ..events import Event
from .port import (Batch, ConcurrentUpdate, Doc, DuplicateKey, Filter, LoggedEvent, Sort, Store,
                   StoreUnavailable, Transaction)
from .schema import COLLECTIONS, indexes

log = logging.getLogger(__name__)
T = TypeVar("T")

# Core tables, versioned with PRAGMA user_version.  Append; never edit a shipped step.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE event_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        subject TEXT NOT NULL,
        source TEXT NOT NULL,
        envelope TEXT NOT NULL,
        relayed INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX event_log_type ON event_log(type, seq);
    CREATE INDEX event_log_unrelayed ON event_log(relayed, seq);
    CREATE TABLE consumer_offsets (grp TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    """,
    # sync(): one row rewritten in a FULL commit, whose WAL fsync makes relaxed commits durable too.
    """
    CREATE TABLE sync_marks (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
    """,
]


def _table(collection: str) -> str:
    if not collection.replace("_", "").isalnum():
        raise ValueError(f"bad collection name {collection!r}")
    return f'"c_{collection}"'


def _path_expr(field: str) -> str:
    if field == "id":
        return "id"
    if not all(part.replace("_", "").isalnum() for part in field.split(".")):
        raise ValueError(f"bad field name {field!r}")
    return f"json_extract(doc, '$.{field}')"


def _sql_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list)):
        raise TypeError("filters compare scalars only")
    return value


def compile_filter(where: Filter | None) -> tuple[str, list[Any]]:
    """Translate the port's filter language into a SQL ``WHERE`` clause."""
    if not where:
        return "1", []
    clauses: list[str] = []
    params: list[Any] = []
    for key, cond in where.items():
        if key == "$or":
            parts = [compile_filter(sub) for sub in cond]
            clauses.append("(" + " OR ".join(f"({s})" for s, _ in parts) + ")" if parts else "0")
            for _, p in parts:
                params.extend(p)
            continue
        expr = _path_expr(key)
        ops = cond if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond) else {"$eq": cond}
        for op, value in ops.items():
            if op == "$eq":
                if value is None:
                    clauses.append(f"{expr} IS NULL")
                else:
                    clauses.append(f"{expr} = ?")
                    params.append(_sql_value(value))
            elif op == "$ne":
                if value is None:
                    clauses.append(f"{expr} IS NOT NULL")
                else:
                    clauses.append(f"({expr} IS NULL OR {expr} != ?)")
                    params.append(_sql_value(value))
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                sym = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
                clauses.append(f"{expr} {sym} ?")
                params.append(_sql_value(value))
            elif op in ("$in", "$nin"):
                values = list(value)
                has_null = any(v is None for v in values)
                values = [_sql_value(v) for v in values if v is not None]
                marks = ",".join("?" * len(values))
                if op == "$in":
                    parts_in = [f"{expr} IN ({marks})"] if values else []
                    if has_null:
                        parts_in.append(f"{expr} IS NULL")
                    clauses.append("(" + " OR ".join(parts_in) + ")" if parts_in else "0")
                else:
                    base = f"{expr} NOT IN ({marks})" if values else "1"
                    clauses.append(f"({expr} IS NOT NULL AND {base})" if has_null
                                   else f"({expr} IS NULL OR {base})")
                params.extend(values)
            elif op == "$exists":
                json_type = "1" if key == "id" else f"json_type(doc, '$.{key}')"
                clauses.append(f"{json_type} IS {'NOT ' if value else ''}NULL")
            elif op == "$prefix":
                clauses.append(f"substr({expr}, 1, ?) = ?")
                params.extend([len(value), value])
            else:
                raise ValueError(f"unknown filter operator {op!r}")
    return " AND ".join(clauses), params


def compile_sort(sort: Sort) -> str:
    parts = [f"{_path_expr(f)} {'DESC' if d < 0 else 'ASC'}" for f, d in sort]
    return "ORDER BY " + ", ".join(parts + ["id"])


def _dump(doc: Doc) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class _Conn:
    """sqlite3 connections each confined to its own thread: one for the writer, ``threads`` for reads."""

    def __init__(self, path: str, *, synchronous: str, readonly: bool = False, threads: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sqlite")
        self._path, self._sync, self._readonly = path, synchronous, readonly
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = getattr(self._local, "db", None)
        if db is None:
            uri = f"file:{self._path}?mode=ro" if self._readonly else f"file:{self._path}"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0)
            db.execute("PRAGMA busy_timeout = 30000")
            if not self._readonly:
                db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {self._sync}")
            self._local.db = db
            self._opened.append(db)
        return fn(db)

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        for db in self._opened:  # no thread uses them any more
            db.close()
        self._opened.clear()


class SqliteTransaction(Transaction):
    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._events: list[Event] = []

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._store._writer.run(fn)

    async def get(self, collection: str, id: str) -> Doc | None:
        await self._store._ensure(collection)
        return await self._run(lambda db: self._store._get(db, collection, id))

    async def find(self, collection: str, where: Filter | None = None, *, sort: Sort = (),
                   limit: int | None = None) -> list[Doc]:
        await self._store._ensure(collection)
        return await self._run(lambda db: self._store._find(db, collection, where, sort, limit, 0))

    async def insert(self, collection: str, doc: Doc) -> None:
        await self._store._ensure(collection)

        def _insert(db: sqlite3.Connection) -> None:
            try:
                db.execute(f"INSERT INTO {_table(collection)} (id, doc) VALUES (?, ?)", (doc["id"], _dump(doc)))
            except sqlite3.IntegrityError as exc:
                raise DuplicateKey(f"{collection}/{doc['id']}: {exc}") from None
        await self._run(_insert)

    async def put(self, collection: str, doc: Doc) -> None:
        await self._store._ensure(collection)

        def _put(db: sqlite3.Connection) -> None:
            try:
                db.execute(f"INSERT INTO {_table(collection)} (id, doc) VALUES (?, ?) "
                           "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc", (doc["id"], _dump(doc)))
            except sqlite3.IntegrityError as exc:
                raise DuplicateKey(f"{collection}/{doc['id']}: {exc}") from None
        await self._run(_put)

    async def update(self, collection: str, id: str, changes: Doc, *, where: Filter | None = None) -> bool:
        await self._store._ensure(collection)
        clause, params = compile_filter(where)
        args: list[Any] = []
        sets = []
        for field, value in changes.items():
            if field == "id" or not field.replace("_", "").isalnum():
                raise ValueError(f"cannot update field {field!r}")
            sets.append(f"'$.{field}', json(?)")
            args.append(json.dumps(value, ensure_ascii=False))
        sql = (f"UPDATE {_table(collection)} SET doc = json_set(doc, {', '.join(sets)}) "
               f"WHERE id = ? AND ({clause})")

        def _update(db: sqlite3.Connection) -> bool:
            return db.execute(sql, (*args, id, *params)).rowcount == 1
        return await self._run(_update)

    async def delete(self, collection: str, id: str) -> bool:
        await self._store._ensure(collection)
        return await self._run(
            lambda db: db.execute(f"DELETE FROM {_table(collection)} WHERE id = ?", (id,)).rowcount == 1)

    def emit(self, event: Event) -> None:
        self._store.validate(event)
        self._events.append(event)

    def _flush_events(self, db: sqlite3.Connection) -> None:
        if self._events:
            db.executemany(
                "INSERT INTO event_log (id, type, subject, source, envelope) VALUES (?, ?, ?, ?, ?)",
                [(e.id, e.type, e.subject, e.source, e.to_json()) for e in self._events])


class SqliteStore(Store):
    """``sqlite:///path/to/yilian.db`` (``?synchronous=FULL|NORMAL``, default FULL; ``&readers=N``,
    reader connections, default 1)."""

    def __init__(self, url: str, *, validate: Callable[[Event], None] | None = None) -> None:
        self.url = url
        parsed = urlparse(url)
        self.path = parsed.path if parsed.netloc == "" else parsed.netloc + parsed.path
        if self.path.startswith("//"):
            self.path = self.path[1:]
        query = parse_qs(parsed.query)
        sync = query.get("synchronous", ["FULL"])[0].upper()
        if sync not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError(f"bad synchronous={sync}")
        self._validate = validate
        self._writer = _Conn(self.path, synchronous=sync)
        self._writer_sync = sync
        try:
            readers = int(query.get("readers", ["1"])[0])
        except ValueError:
            readers = 0
        if not 1 <= readers <= 64:
            raise ValueError(f"bad readers={query.get('readers', [''])[0]} (1 to 64 reader connections)")
        self._reader = _Conn(self.path, synchronous=sync, threads=readers)
        self._now = threading.local()  # get_now()'s connections
        self._now_opened: list[sqlite3.Connection] = []
        self._tx_lock = asyncio.Lock()
        self._known: set[str] = set()
        self._applies: list[tuple[Sequence[tuple[str, str]], Callable[[list[Doc | None]], Batch],
                                  asyncio.Future[Batch]]] = []
        # Callbacks run after a commit that appended events (the embedded bus wakes on it).
        self.on_commit: list[Callable[[], None]] = []

    def validate(self, event: Event) -> None:
        if self._validate is not None:
            self._validate(event)

    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._writer.run(self._migrate)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        await self._writer.run(self._create_collections)
        self._known = set(COLLECTIONS)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, sql.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {step}")
                log.info("sqlite migration applied", extra={"step": step})
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def _ensure(self, collection: str) -> None:
        if collection not in self._known:
            raise KeyError(f"collection {collection!r} is not declared in services/core/store/schema.py")

    @staticmethod
    def _create_collections(db: sqlite3.Connection) -> None:
        for collection in COLLECTIONS:
            table = _table(collection)
            db.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
            for ix in indexes(collection):
                name = f"ix_{collection}_{'_'.join(f.replace('.', '_') for f in ix.fields)}"
                cols = ", ".join(_path_expr(f) for f in ix.fields)
                db.execute(f"CREATE {'UNIQUE ' if ix.unique else ''}INDEX IF NOT EXISTS "
                           f"\"{name}\" ON {table} ({cols})")

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()
        for db in self._now_opened:
            db.close()
        self._now_opened.clear()
        self._now = threading.local()

    async def ping(self) -> None:
        try:
            await self._reader.run(lambda db: db.execute("SELECT 1").fetchone())
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        async with self._tx_lock:
            tx = SqliteTransaction(self)
            await self._writer.run(lambda db: db.execute("BEGIN IMMEDIATE"))
            try:
                yield tx
            except BaseException:
                await asyncio.shield(self._writer.run(lambda db: db.execute("ROLLBACK")))
                raise

            def _commit(db: sqlite3.Connection) -> None:
                try:
                    tx._flush_events(db)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            try:
                await asyncio.shield(self._writer.run(_commit))
            except sqlite3.IntegrityError as exc:
                raise ConcurrentUpdate(str(exc)) from exc
        if tx._events:
            for callback in self.on_commit:
                callback()

    async def apply(self, reads: Sequence[tuple[str, str]], decide: Callable[[list[Doc | None]], Batch], *,
                    durable: bool = True) -> Any:
        # Group commit: calls that arrive while the writer is busy wait on the lock, and the
        # first of them to get it runs them all in one transaction (one fsync), each in its own
        # savepoint so one failing leaves the others' writes intact.
        for collection, _ in reads:
            await self._ensure(collection)
        future: asyncio.Future[Batch] = asyncio.get_running_loop().create_future()
        self._applies.append((reads, decide, future, durable))
        async with self._tx_lock:
            if not future.done():
                group, self._applies = self._applies, []
                try:
                    outcomes = await asyncio.shield(self._writer.run(lambda db: self._apply_group(db, group)))
                except BaseException as exc:
                    for _, _, f, _ in group:
                        if not f.done():
                            f.set_exception(exc if isinstance(exc, Exception) else StoreUnavailable(repr(exc)))
                    raise
                for (_, _, f, _), outcome in zip(group, outcomes):
                    if not f.done():
                        (f.set_exception if isinstance(outcome, BaseException) else f.set_result)(outcome)
                if any(isinstance(o, Batch) and o.events for o in outcomes):
                    for callback in self.on_commit:
                        callback()
        return (await future).result

    def _apply_group(self, db: sqlite3.Connection, group: list[Any]) -> list[Batch | BaseException]:
        # A group in which nobody needs the fsync commits with synchronous=NORMAL (WAL: no fsync;
        # the next FULL commit or sync() syncs it), as set_offset does.
        relaxed = self._writer_sync in ("FULL", "EXTRA") and not any(durable for *_, durable in group)
        if relaxed:
            db.execute("PRAGMA synchronous = NORMAL")
        try:
            return self._apply_group_tx(db, group)
        finally:
            if relaxed:
                db.execute(f"PRAGMA synchronous = {self._writer_sync}")

    def _apply_group_tx(self, db: sqlite3.Connection, group: list[Any]) -> list[Batch | BaseException]:
        outcomes: list[Batch | BaseException] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for reads, decide, _, _ in group:
                db.execute("SAVEPOINT apply")
                try:
                    batch = decide([self._get(db, collection, id) for collection, id in reads])
                    for event in batch.events:
                        self.validate(event)
                    for collection, doc in batch.puts:
                        if collection not in self._known:
                            raise KeyError(f"collection {collection!r} is not declared in store/schema.py")
                        db.execute(f"INSERT INTO {_table(collection)} (id, doc) VALUES (?, ?) "
                                   "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc", (doc["id"], _dump(doc)))
                    if batch.events:
                        db.executemany(
                            "INSERT INTO event_log (id, type, subject, source, envelope) VALUES (?, ?, ?, ?, ?)",
                            [(e.id, e.type, e.subject, e.source, e.to_json()) for e in batch.events])
                    db.execute("RELEASE apply")
                    outcomes.append(batch)
                except Exception as exc:
                    db.execute("ROLLBACK TO apply")
                    db.execute("RELEASE apply")
                    if isinstance(exc, sqlite3.IntegrityError):
                        exc = DuplicateKey(str(exc))
                    outcomes.append(exc)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return outcomes

    # --- reads -------------------------------------------------------------------
    @staticmethod
    def _get(db: sqlite3.Connection, collection: str, id: str) -> Doc | None:
        row = db.execute(f"SELECT doc FROM {_table(collection)} WHERE id = ?", (id,)).fetchone()
        return json.loads(row[0]) if row else None

    @staticmethod
    def _find(db: sqlite3.Connection, collection: str, where: Filter | None, sort: Sort,
              limit: int | None, offset: int) -> list[Doc]:
        clause, params = compile_filter(where)
        sql = f"SELECT doc FROM {_table(collection)} WHERE {clause} {compile_sort(sort)}"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            params = [*params, -1 if limit is None else limit, offset]
        return [json.loads(r[0]) for r in db.execute(sql, params)]

    async def get(self, collection: str, id: str) -> Doc | None:
        await self._ensure(collection)
        return await self._reader.run(lambda db: self._get(db, collection, id))

    def get_now(self, collection: str, id: str) -> Doc | None:
        # A read-only connection per calling thread (the event loop's): a primary-key read in WAL
        # mode takes ~10 µs and never waits for the writer.
        if collection not in self._known:
            raise KeyError(f"collection {collection!r} is not declared in services/core/store/schema.py")
        db = getattr(self._now, "db", None)
        if db is None:
            db = self._now.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                                check_same_thread=False, timeout=30.0)
            self._now_opened.append(db)
        return self._get(db, collection, id)

    async def find(self, collection: str, where: Filter | None = None, *, sort: Sort = (),
                   limit: int | None = None, offset: int = 0) -> list[Doc]:
        await self._ensure(collection)
        return await self._reader.run(lambda db: self._find(db, collection, where, sort, limit, offset))

    async def count(self, collection: str, where: Filter | None = None) -> int:
        await self._ensure(collection)
        clause, params = compile_filter(where)
        return await self._reader.run(
            lambda db: db.execute(f"SELECT count(*) FROM {_table(collection)} WHERE {clause}", params).fetchone()[0])

    # --- event log -----------------------------------------------------------------
    @staticmethod
    def _logged(rows: Sequence[tuple[int, str]]) -> list[LoggedEvent]:
        return [LoggedEvent(seq, Event.from_json(env)) for seq, env in rows]

    async def read_log(self, after: int, *, limit: int = 500,
                       types: Sequence[str] | None = None) -> list[LoggedEvent]:
        if types:
            marks = ",".join("?" * len(types))
            sql = f"SELECT seq, envelope FROM event_log WHERE seq > ? AND type IN ({marks}) ORDER BY seq LIMIT ?"
            params: list[Any] = [after, *types, limit]
        else:
            sql, params = "SELECT seq, envelope FROM event_log WHERE seq > ? ORDER BY seq LIMIT ?", [after, limit]
        rows = await self._reader.run(lambda db: db.execute(sql, params).fetchall())
        return self._logged(rows)

    async def last_seq(self) -> int:
        row = await self._reader.run(lambda db: db.execute("SELECT max(seq) FROM event_log").fetchone())
        return row[0] or 0

    async def read_unrelayed(self, *, source: str | None = None, limit: int = 500) -> list[LoggedEvent]:
        sql = "SELECT seq, envelope FROM event_log WHERE relayed = 0"
        params: list[Any] = []
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        rows = await self._reader.run(lambda db: db.execute(sql, params).fetchall())
        return self._logged(rows)

    async def mark_relayed(self, seqs: Sequence[int], *, relayed: bool = True) -> None:
        async with self._tx_lock:
            await self._writer.run(lambda db: db.executemany(
                "UPDATE event_log SET relayed = ? WHERE seq = ?", [(int(relayed), s) for s in seqs]))

    async def sync(self) -> None:
        # A FULL commit fsyncs the WAL, relaxed commits' frames included.  (Never fsync the files
        # through another descriptor: closing it would drop this process's SQLite locks on them.)
        def _sync(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA synchronous = FULL")
            try:
                db.execute("INSERT INTO sync_marks (id, at) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET at = excluded.at",
                           (time.time(),))
            finally:
                db.execute(f"PRAGMA synchronous = {self._writer_sync}")
        async with self._tx_lock:
            await self._writer.run(_sync)

    async def get_offset(self, group: str) -> int:
        row = await self._reader.run(
            lambda db: db.execute("SELECT seq FROM consumer_offsets WHERE grp = ?", (group,)).fetchone())
        return row[0] if row else 0

    async def set_offset(self, group: str, seq: int) -> None:
        # Not fsynced on its own (synchronous=NORMAL for this commit; the next FULL commit syncs the
        # WAL up to and including it): every consumer acknowledges every event, so fsyncing each
        # one starved the writer.  Survives a process crash; a power loss may roll an offset back,
        # which only redelivers events, and consumers are idempotent (first_time).
        def _set(db: sqlite3.Connection) -> None:
            relaxed = self._writer_sync in ("FULL", "EXTRA")
            if relaxed:
                db.execute("PRAGMA synchronous = NORMAL")
            try:
                db.execute("INSERT INTO consumer_offsets (grp, seq) VALUES (?, ?) "
                           "ON CONFLICT(grp) DO UPDATE SET seq = max(seq, excluded.seq)", (group, seq))
            finally:
                if relaxed:
                    db.execute(f"PRAGMA synchronous = {self._writer_sync}")
        async with self._tx_lock:
            await self._writer.run(_set)
