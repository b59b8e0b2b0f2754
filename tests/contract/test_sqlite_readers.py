"""The SQLite adapter's reader pool: reads run beside each other and always see what was committed."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.core.events import registry
from services.core.store.sqlite import SqliteStore


async def opened(tmp_path, query: str = "") -> SqliteStore:
    store = SqliteStore(f"sqlite:///{tmp_path / 'pool.db'}{query}", validate=registry().validate)
    await store.open()
    return store


async def test_a_slow_read_does_not_hold_up_the_others(tmp_path):
    store = await opened(tmp_path, "?readers=3")
    try:
        async with store.transaction() as tx:
            await tx.insert("studies", {"id": "1.2.3", "organization": "chengguan-thc"})
        release = threading.Event()
        slow = asyncio.ensure_future(store._reader.run(lambda db: release.wait(30)))  # one reader busy
        other = await asyncio.wait_for(asyncio.gather(*(store.get("studies", "1.2.3") for _ in range(20))), 10)
        assert all(doc and doc["organization"] == "chengguan-thc" for doc in other)
        assert not slow.done()
        release.set()
        assert await slow
    finally:
        await store.close()


async def test_every_reader_sees_each_commit_at_once(tmp_path):
    store = await opened(tmp_path, "?readers=4")
    try:
        async with store.transaction() as tx:
            await tx.insert("reading_requests", {"id": "rr-1", "centre": "county-imaging", "version": 0})
        for version in range(1, 30):
            async with store.transaction() as tx:
                assert await tx.update("reading_requests", "rr-1", {"version": version})
            seen = await asyncio.gather(*(store.get("reading_requests", "rr-1") for _ in range(8)),
                                        *(store.count("reading_requests", {"version": version}) for _ in range(4)))
            assert [d["version"] for d in seen[:8]] == [version] * 8 and seen[8:] == [1] * 4
    finally:
        await store.close()


async def test_one_reader_still_works_and_close_closes_every_connection(tmp_path):
    store = await opened(tmp_path, "?readers=1&synchronous=NORMAL")
    await asyncio.gather(*(store.find("studies", {}) for _ in range(10)))
    opened_connections = list(store._reader._opened)
    await store.close()
    assert len(opened_connections) == 1
    for db in opened_connections:
        with pytest.raises(Exception):
            db.execute("SELECT 1")


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_a_bad_reader_count_is_refused_with_its_value(tmp_path, value):
    with pytest.raises(ValueError, match=f"readers={value}"):
        SqliteStore(f"sqlite:///{tmp_path / 'x.db'}?readers={value}")


async def test_offsets_are_committed_and_the_writer_stays_fully_synchronous(tmp_path):
    """Offsets skip their own fsync; nothing else may: the writer's level is FULL (2) again after."""
    store = await opened(tmp_path)
    try:
        await store.set_offset("workflow", 7)
        await store.set_offset("workflow", 5)  # never backwards
        assert await store._writer.run(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2
    finally:
        await store.close()
    store = await opened(tmp_path)
    try:
        assert await store.get_offset("workflow") == 7
    finally:
        await store.close()
