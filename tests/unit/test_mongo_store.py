"""MongoStore specifics the shared contract does not cover."""

from __future__ import annotations

import time

import pytest
from mongomock_motor import AsyncMongoMockClient

from services.core.events import Event, registry
from services.core.runtime import make_store
from services.core.store.mongo import MongoStore, compile_filter, database_name
from services.core.store.port import ConcurrentUpdate, StoreUnavailable
from tests.support import free_port


@pytest.fixture
async def store():
    s = MongoStore("mongodb://mongomock/unit", validate=registry().validate, client=AsyncMongoMockClient())
    await s.open()
    yield s
    await s.close()


def probe(seq: int) -> Event:
    return Event("bus.probe", subject="s", data={"seq": seq}, source="/yilian/test")


def test_database_comes_from_the_url_path():
    assert database_name("mongodb://db1:27017,db2:27017/consortium?replicaSet=rs0") == "consortium"
    assert database_name("mongodb://db1") == "yilian"
    assert database_name("mongodb://db1/?replicaSet=rs0") == "yilian"


def test_runtime_picks_mongo_for_mongodb_urls():
    store = make_store("mongodb://127.0.0.1:1/x", registry().validate)
    assert isinstance(store, MongoStore) and store.database == "x"


async def test_unreachable_server_is_store_unavailable_with_a_precise_message():
    port = free_port()  # nothing listens there
    store = MongoStore(f"mongodb://yilian:s3cret@127.0.0.1:{port}/clinic?serverSelectionTimeoutMS=300",
                       validate=registry().validate)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as err:
        await store.open()
    assert time.monotonic() - started < 5  # the URL's short timeout applies
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "clinic" in message
    assert "s3cret" not in message
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await store.close()


def test_server_selection_timeout_defaults_short():
    store = MongoStore("mongodb://127.0.0.1:1/x", validate=None)
    assert store._client.options.server_selection_timeout == 5


def test_filter_translation():
    assert compile_filter({"id": "a"}) == {"_id": "a"}
    assert compile_filter({"n": {"$gte": 1, "$lt": 3}}) == {"$and": [{"n": {"$gte": 1}}, {"n": {"$lt": 3}}]}
    assert compile_filter({"s": {"$prefix": "1.2"}}) == {"s": {"$regex": r"^1\.2"}}
    assert compile_filter({"$or": []}) == {"_id": {"$in": []}}
    with pytest.raises(TypeError):
        compile_filter({"n": {"$eq": {"$where": "sleep(1000)"}}})
    with pytest.raises(ValueError):
        compile_filter({"$where": "1"})
    with pytest.raises(ValueError):
        compile_filter({"n": {"$regex": ".*"}})


async def test_prefix_is_literal_not_a_regex(store):
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "a", "uid": "1.2.840.1"})
        await tx.insert("studies", {"id": "b", "uid": "1x2x840"})
    assert [d["id"] for d in await store.find("studies", {"uid": {"$prefix": "1.2."}})] == ["a"]


async def test_documents_keep_id_and_hide_mongo_id(store):
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "x", "organization": "o"})
    doc = await store.get("studies", "x")
    assert doc == {"id": "x", "organization": "o"}
    raw = await store.db["studies"].find_one({"_id": "x"})
    assert "id" not in raw


async def test_open_creates_the_declared_indexes(store):
    info = await store.db["reading_requests"].index_information()
    assert "ix_centre_state" in info and "ix_state_deadline" in info
    log_ix = await store.db["event_log"].index_information()
    assert log_ix["ix_event_id"].get("unique") is True


async def test_rollback_without_transactions_restores_every_write(store):
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "p", "v": 1})
        await tx.insert("studies", {"id": "u", "v": 1})
        await tx.insert("studies", {"id": "d", "v": 1})
        tx.emit(probe(1))
    before = await store.last_seq()
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.put("studies", {"id": "p", "v": 2})
            await tx.put("studies", {"id": "new", "v": 2})
            assert await tx.update("studies", "u", {"v": 2})
            assert await tx.delete("studies", "d")
            tx.emit(probe(2))
            raise RuntimeError("handler failed")
    assert [(d["id"], d["v"]) for d in await store.find("studies")] == [("d", 1), ("p", 1), ("u", 1)]
    assert await store.last_seq() == before
    await store.append(probe(3))
    assert await store.last_seq() == before + 1  # no gap left by the rolled-back events


async def test_the_same_event_twice_is_refused_and_rolled_back(store):
    event = probe(1)
    with pytest.raises(ConcurrentUpdate):
        async with store.transaction() as tx:
            await tx.insert("studies", {"id": "twice"})
            tx.emit(event)
            tx.emit(event)
    assert await store.get("studies", "twice") is None


async def test_bad_update_fields_are_refused(store):
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "x"})
        with pytest.raises(ValueError):
            await tx.update("studies", "x", {"a.b": 1})
        with pytest.raises(ValueError):
            await tx.update("studies", "x", {"$set": 1})
