"""The store port's contract: every adapter in STORE_ADAPTERS must pass all of it."""

from __future__ import annotations

import asyncio

import pytest

from services.core.events import Event, InvalidEvent
from services.core.store.port import DuplicateKey

from .adapters import STORE_ADAPTERS


@pytest.fixture(params=sorted(STORE_ADAPTERS))
async def store(request, tmp_path):
    async with STORE_ADAPTERS[request.param](tmp_path) as s:
        yield s


def probe(seq: int, subject: str = "s-1") -> Event:
    return Event("bus.probe", subject=subject, data={"seq": seq}, source="/yilian/test")


async def test_insert_get_find_count(store):
    async with store.transaction() as tx:
        for i in range(5):
            await tx.insert("studies", {"id": f"1.2.{i}", "organization": "a" if i < 3 else "b",
                                        "n": i, "nested": {"k": f"v{i}"}, "name": f"王{i}"})
    assert (await store.get("studies", "1.2.1"))["nested"] == {"k": "v1"}
    assert await store.get("studies", "missing") is None
    assert [d["id"] for d in await store.find("studies", {"organization": "a"}, sort=[("n", -1)])] == \
        ["1.2.2", "1.2.1", "1.2.0"]
    assert await store.count("studies", {"organization": "b"}) == 2
    assert await store.count("studies") == 5
    page = await store.find("studies", sort=[("n", 1)], limit=2, offset=2)
    assert [d["n"] for d in page] == [2, 3]
    assert [d["id"] for d in await store.find("studies", {"nested.k": "v4"})] == ["1.2.4"]
    assert (await store.get("studies", "1.2.0"))["name"] == "王0"


async def test_filter_operators(store):
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "a", "n": 1, "s": "alpha", "flag": True})
        await tx.insert("studies", {"id": "b", "n": 2, "s": "beta", "flag": False, "opt": None})
        await tx.insert("studies", {"id": "c", "n": 3, "s": "alps", "opt": "x"})

    async def ids(where):
        return sorted(d["id"] for d in await store.find("studies", where))

    assert await ids({"n": {"$gt": 1}}) == ["b", "c"]
    assert await ids({"n": {"$gte": 1, "$lt": 3}}) == ["a", "b"]
    assert await ids({"n": {"$lte": 2}}) == ["a", "b"]
    assert await ids({"n": {"$ne": 2}}) == ["a", "c"]
    assert await ids({"n": {"$in": [1, 3]}}) == ["a", "c"]
    assert await ids({"n": {"$nin": [1, 3]}}) == ["b"]
    assert await ids({"s": {"$prefix": "alp"}}) == ["a", "c"]
    assert await ids({"flag": True}) == ["a"]
    assert await ids({"flag": False}) == ["b"]
    assert await ids({"opt": None}) == ["a", "b"]  # missing or null
    assert await ids({"opt": {"$ne": None}}) == ["c"]
    assert await ids({"opt": {"$ne": "x"}}) == ["a", "b"]
    assert await ids({"flag": {"$exists": True}}) == ["a", "b"]
    assert await ids({"flag": {"$exists": False}}) == ["c"]
    assert await ids({"$or": [{"n": 1}, {"s": "beta"}]}) == ["a", "b"]
    assert await ids({"$or": [{"n": 1}, {"n": 3}], "s": "alps"}) == ["c"]
    assert await ids({"id": {"$in": ["a", "c"]}}) == ["a", "c"]
    assert await ids({"n": {"$in": []}}) == []


async def test_duplicate_insert_and_put_replace(store):
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "x", "v": 1})
    with pytest.raises(DuplicateKey):
        async with store.transaction() as tx:
            await tx.insert("studies", {"id": "x", "v": 2})
    async with store.transaction() as tx:
        await tx.put("studies", {"id": "x", "v": 3})
    assert (await store.get("studies", "x"))["v"] == 3


async def test_rollback_discards_state_and_events(store):
    before = await store.last_seq()
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.insert("studies", {"id": "gone"})
            tx.emit(probe(1))
            raise RuntimeError("boom")
    assert await store.get("studies", "gone") is None
    assert await store.last_seq() == before


async def test_conditional_update_is_compare_and_set(store):
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "t", "state": "queued", "holder": None})
    async with store.transaction() as tx:
        assert await tx.update("studies", "t", {"state": "claimed", "holder": "r1"}, where={"state": "queued"})
    async with store.transaction() as tx:
        assert not await tx.update("studies", "t", {"state": "claimed", "holder": "r2"}, where={"state": "queued"})
        assert not await tx.update("studies", "missing", {"state": "x"})
    doc = await store.get("studies", "t")
    assert doc["holder"] == "r1" and doc["state"] == "claimed"


async def test_concurrent_claims_exactly_one_wins(store):
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "race", "state": "queued"})

    async def claim(who: str) -> bool:
        async with store.transaction() as tx:
            return await tx.update("studies", "race", {"state": "claimed", "holder": who}, where={"state": "queued"})

    results = await asyncio.gather(*(claim(f"r{i}") for i in range(10)))
    assert sum(results) == 1


async def test_delete(store):
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "d"})
    async with store.transaction() as tx:
        assert await tx.delete("studies", "d")
        assert not await tx.delete("studies", "d")
    assert await store.get("studies", "d") is None


async def test_event_log_is_the_outbox(store):
    start = await store.last_seq()
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "s"})
        tx.emit(probe(1))
        tx.emit(Event("config.loaded", subject="c", data={"consortium_id": "c", "digest": "d"},
                      source="/yilian/other"))
    logged = await store.read_log(start)
    assert [e.event.type for e in logged] == ["bus.probe", "config.loaded"]
    assert logged[0].seq < logged[1].seq
    assert [e.event.type for e in await store.read_log(start, types=["config.loaded"])] == ["config.loaded"]
    assert await store.last_seq() == logged[-1].seq
    # the envelope survives the round trip
    assert logged[0].event.data == {"seq": 1} and logged[0].event.source == "/yilian/test"


async def test_emit_validates_against_schema(store):
    with pytest.raises(InvalidEvent):
        async with store.transaction() as tx:
            tx.emit(Event("bus.probe", subject="x", data={"seq": "not a number"}))


async def test_relay_bookkeeping(store):
    start = await store.last_seq()
    await store.append(probe(1), Event("bus.probe", subject="z", data={"seq": 2}, source="/yilian/x"))
    pending = await store.read_unrelayed(source="/yilian/test")
    assert [p.event.data["seq"] for p in pending if p.seq > start] == [1]
    await store.mark_relayed([p.seq for p in pending])
    assert [p for p in await store.read_unrelayed(source="/yilian/test") if p.seq > start] == []
    assert len([p for p in await store.read_unrelayed() if p.seq > start]) == 1
    # A broker that lost them: back in the outbox, where they were in seq order.
    await store.mark_relayed([p.seq for p in pending], relayed=False)
    assert [p.event.data["seq"] for p in await store.read_unrelayed(source="/yilian/test") if p.seq > start] == [1]


async def test_offsets_only_move_forward(store):
    assert await store.get_offset("g") == 0
    await store.set_offset("g", 10)
    await store.set_offset("g", 5)
    assert await store.get_offset("g") == 10


async def test_first_time_records_handled_events_with_the_effect(store):
    async with store.transaction() as tx:
        assert await tx.first_time("workflow", "e1")
        assert not await tx.first_time("workflow", "e1")
        assert await tx.first_time("delivery", "e1")
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            assert await tx.first_time("workflow", "e2")
            raise RuntimeError
    async with store.transaction() as tx:
        assert await tx.first_time("workflow", "e2")  # the rollback forgot it


async def test_unknown_collection_is_an_error(store):
    with pytest.raises(KeyError):
        await store.get("no_such_collection", "x")


async def test_apply_reads_decides_and_commits_with_events(store):
    from services.core.store.port import Batch
    async with store.transaction() as tx:
        await tx.put("studies", {"id": "a", "n": 1})

    def bump(docs):
        study, missing = docs
        assert missing is None
        return Batch(puts=[("studies", {**study, "n": study["n"] + 1})], events=[probe(study["n"])],
                     result=study["n"] + 1)
    start = await store.last_seq()
    assert await store.apply([("studies", "a"), ("studies", "nope")], bump) == 2
    assert (await store.get("studies", "a"))["n"] == 2
    assert [e.event.data for e in await store.read_log(start)] == [{"seq": 1}]


async def test_apply_concurrent_calls_each_see_the_last_write_and_one_failing_loses_only_its_own(store):
    from services.core.store.port import Batch
    async with store.transaction() as tx:
        await tx.put("studies", {"id": "c", "n": 0})

    def inc(docs):
        return Batch(puts=[("studies", {"id": "c", "n": docs[0]["n"] + 1})], events=[probe(docs[0]["n"])])

    def fail(docs):
        raise ValueError("refused")

    def bad_event(docs):
        return Batch(puts=[("studies", {"id": "c", "n": -100})],
                     events=[Event("bus.probe", subject="x", data={"seq": "not a number"})])
    start = await store.last_seq()
    decisions = [inc] * 20
    decisions[5], decisions[9] = fail, bad_event
    calls = [store.apply([("studies", "c")], decide) for decide in decisions]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[5], ValueError)
    assert isinstance(results[9], InvalidEvent)
    assert sum(r is None for r in results) == 18
    assert (await store.get("studies", "c"))["n"] == 18
    assert sorted(e.event.data["seq"] for e in await store.read_log(start)) == list(range(18))


async def test_apply_not_durable_is_visible_at_once_and_sync_keeps_it(store, tmp_path):
    from services.core.store.port import Batch
    start = await store.last_seq()
    # durable=False (the gateway's journal can redo it): committed and visible, fsync deferred.
    results = await asyncio.gather(*(store.apply([("studies", f"r{i}")], lambda docs, i=i: Batch(
        puts=[("studies", {"id": f"r{i}", "n": i})], events=[probe(i)], result=i), durable=i % 2 == 0)
        for i in range(6)))
    assert results == list(range(6))
    assert [(await store.get("studies", f"r{i}"))["n"] for i in range(6)] == list(range(6))
    await store.sync()
    assert sorted(e.event.data["seq"] for e in await store.read_log(start)) == list(range(6))
    async with store.transaction() as tx:  # durable commits go on as before
        await tx.put("studies", {"id": "after", "n": 1})
    assert await store.count("studies", {"id": "after"}) == 1


async def test_get_now_reads_what_get_reads_or_says_it_cannot(store):
    async with store.transaction() as tx:
        await tx.insert("studies", {"id": "1.2.9", "name": "李雷", "n": 9})
    try:
        now = store.get_now("studies", "1.2.9")
    except NotImplementedError:  # a networked store: callers fall back to get()
        assert type(store).__name__ == "MongoStore"
        return
    assert now == await store.get("studies", "1.2.9")
    assert store.get_now("studies", "missing") is None
    async with store.transaction() as tx:  # a commit after the first read is seen by the next
        await tx.put("studies", {"id": "1.2.9", "name": "韩梅梅", "n": 10})
    assert store.get_now("studies", "1.2.9")["n"] == 10
    with pytest.raises(KeyError):
        store.get_now("no_such_collection", "x")
