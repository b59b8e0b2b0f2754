"""The adapters each contract suite runs against.  Add an adapter here and it must pass."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from services.core.events import registry
from services.core.store.port import Store

StoreFactory = Callable[[Path], "asynccontextmanager[Store]"]


@asynccontextmanager
async def sqlite_store(tmp: Path) -> AsyncIterator[Store]:
    from services.core.store.sqlite import SqliteStore
    store = SqliteStore(f"sqlite:///{tmp / 'contract.db'}", validate=registry().validate)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def mongomock_store(tmp: Path) -> AsyncIterator[Store]:
    """The MongoDB adapter over mongomock-motor (no server, no transactions)."""
    from mongomock_motor import AsyncMongoMockClient

    from services.core.store.mongo import MongoStore
    store = MongoStore("mongodb://mongomock/contract", validate=registry().validate,
                       client=AsyncMongoMockClient())
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def mongodb_store(tmp: Path) -> AsyncIterator[Store]:
    """The MongoDB adapter over the real server at YILIAN_TEST_MONGO_URL, one database per test."""
    import uuid

    from services.core.store.mongo import MongoStore
    store = MongoStore(os.environ["YILIAN_TEST_MONGO_URL"], validate=registry().validate,
                       database=f"yilian_test_{uuid.uuid4().hex[:12]}")
    await store.open()
    try:
        yield store
    finally:
        await store._client.drop_database(store.database)
        await store.close()


STORE_ADAPTERS: dict[str, Callable] = {"sqlite": sqlite_store, "mongomock": mongomock_store}
if os.environ.get("YILIAN_TEST_MONGO_URL"):
    STORE_ADAPTERS["mongodb"] = mongodb_store


@asynccontextmanager
async def embedded_bus(tmp: Path, *, retry=None) -> AsyncIterator[tuple["Bus", Store]]:
    """An embedded bus over its own SQLite store; yields (bus, store)."""
    from services.core.bus.embedded import EmbeddedBus
    from services.core.bus.port import RetryPolicy
    async with sqlite_store(tmp) as store:
        yield EmbeddedBus(store, validate=registry().validate, poll_interval=0.05,
                          retry=retry or RetryPolicy(max_attempts=3, first_backoff=0.01)), store


# name -> factory(tmp_path) yielding (bus, store).  A new bus over the same tmp_path must see the
# same durable state (offsets, log), which the restart test relies on.
@asynccontextmanager
async def kafka_bus(tmp: Path, *, retry=None) -> AsyncIterator[tuple["Bus", Store]]:
    """A KafkaBus on the session's Tansu broker, dead letters in a SQLite store; yields (bus, store).

    The topic/group prefix comes from ``tmp``, so a new bus over the same tmp_path resumes the
    same consumer groups while other tests stay apart.
    """
    import hashlib

    from services.core.bus.kafka import KafkaBus
    from services.core.bus.port import RetryPolicy

    from ..tansu import session_broker
    prefix = "t" + hashlib.sha1(str(tmp).encode()).hexdigest()[:12] + "."
    url = f"{session_broker().url}?prefix={prefix}&partitions=2&session_timeout_ms=1000"
    async with sqlite_store(tmp) as store:
        yield KafkaBus(url, store=store, validate=registry().validate, idempotent=False,
                       retry=retry or RetryPolicy(max_attempts=3, first_backoff=0.01)), store


BUS_ADAPTERS: dict[str, Callable] = {"embedded": embedded_bus, "kafka": kafka_bus}


@asynccontextmanager
async def file_blobs(tmp: Path) -> AsyncIterator["BlobStore"]:
    from services.core.blobs.files import FileBlobStore
    blobs = FileBlobStore(f"file://{tmp / 'blobs'}", fsync=False)
    await blobs.open()
    try:
        yield blobs
    finally:
        await blobs.close()


def _gridfs_over(store_factory: Callable) -> Callable:
    @asynccontextmanager
    async def gridfs_blobs(tmp: Path) -> AsyncIterator["BlobStore"]:
        from services.core.blobs.gridfs import GridFSBlobStore
        async with store_factory(tmp) as store:
            blobs = GridFSBlobStore("gridfs:", store=store, staging=tmp / "staging")
            await blobs.open()
            try:
                yield blobs
            finally:
                await blobs.close()
    return gridfs_blobs


# name -> factory(tmp_path) yielding an opened BlobStore.
BLOB_ADAPTERS: dict[str, Callable] = {"file": file_blobs, "gridfs-mongomock": _gridfs_over(mongomock_store)}
if os.environ.get("YILIAN_TEST_MONGO_URL"):
    BLOB_ADAPTERS["gridfs-mongodb"] = _gridfs_over(mongodb_store)
# Adapters that keep the blobs themselves in this process's memory: a memory test can only
# bound what streaming needs beyond what the store retains.
IN_MEMORY_BLOB_ADAPTERS = {"gridfs-mongomock"}
