"""The API's cache of revoked token ids: one store read per TTL, never a missed revocation."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.api.auth import RevokedTokens
from services.core.auth import revoke

from ..contract.adapters import sqlite_store
from ..support import ManualClock


class CountingStore:
    """Counts the reads the cache makes of the real store underneath."""

    def __init__(self, store) -> None:
        self.store, self.reads = store, 0

    async def find(self, *args, **kwargs):
        self.reads += 1
        return await self.store.find(*args, **kwargs)


@pytest.fixture
async def store(tmp_path):
    async with sqlite_store(tmp_path) as s:
        yield s


async def test_one_read_per_ttl_and_other_processes_revocations_seen_after_it(store):
    clock, counting = ManualClock(100.0), CountingStore(store)
    cache = RevokedTokens(counting, ttl=1.0, clock=clock)
    assert not await cache.contains("t1")
    for _ in range(100):
        assert not await cache.contains("t1")
    assert counting.reads == 1
    async with store.transaction() as tx:  # as another process would: this cache is not told
        await revoke(tx, "t1", by="admin", expires_at=int(time.time()) + 3600)
    clock.now += 0.5
    assert not await cache.contains("t1")  # within the TTL: the documented bound
    clock.now += 0.5
    assert await cache.contains("t1")
    assert counting.reads == 2


async def test_invalidate_makes_a_local_revocation_effective_at_once(store):
    clock = ManualClock(100.0)
    cache = RevokedTokens(store, ttl=1.0, clock=clock)
    assert not await cache.contains("t2")
    async with store.transaction() as tx:
        await revoke(tx, "t2", by="dr-wang", expires_at=None)
    cache.invalidate()
    assert await cache.contains("t2")


async def test_concurrent_checks_share_one_read(store):
    counting = CountingStore(store)
    cache = RevokedTokens(counting, ttl=1.0, clock=ManualClock(100.0))
    results = await asyncio.gather(*(cache.contains(f"t{i}") for i in range(50)))
    assert results == [False] * 50 and counting.reads == 1


async def test_a_read_begun_before_an_invalidation_is_not_trusted(store):
    """The revoke commits while a reload is in flight: the next check must read again."""
    clock = ManualClock(100.0)
    gate = asyncio.Event()
    read_done = asyncio.Event()

    class SlowStore(CountingStore):
        async def find(self, *args, **kwargs):
            result = await super().find(*args, **kwargs)
            read_done.set()
            await gate.wait()
            return result

    slow = SlowStore(store)
    cache = RevokedTokens(slow, ttl=1.0, clock=clock)
    first = asyncio.create_task(cache.contains("t3"))
    await asyncio.wait_for(read_done.wait(), timeout=10)  # the reload has read the store
    async with store.transaction() as tx:
        await revoke(tx, "t3", by="admin")
    cache.invalidate()
    gate.set()
    assert not await first  # read before the revocation committed
    assert await cache.contains("t3")
    assert slow.reads == 2


async def test_expired_revocations_are_not_kept(store):
    async with store.transaction() as tx:
        await revoke(tx, "old", by="admin", expires_at=int(time.time()) - 10)
        await revoke(tx, "live", by="admin", expires_at=int(time.time()) + 10)
    cache = RevokedTokens(store, clock=ManualClock(100.0))
    assert await cache.contains("live") and not await cache.contains("old")


async def test_a_store_failure_fails_the_check_and_the_next_one_reads_again(store):
    class Failing(CountingStore):
        fail = True

        async def find(self, *args, **kwargs):
            self.reads += 1
            if self.fail:
                raise RuntimeError("store down")
            return await self.store.find(*args, **kwargs)

    failing = Failing(store)
    cache = RevokedTokens(failing, clock=ManualClock(100.0))
    with pytest.raises(RuntimeError):
        await cache.contains("t4")  # never "not revoked" by default
    failing.fail = False
    assert not await cache.contains("t4")
