"""The bus port's contract: every adapter in BUS_ADAPTERS must pass all of it."""

from __future__ import annotations

import pytest

from services.core.events import Event, InvalidEvent

from ..support import wait_for
from .adapters import BUS_ADAPTERS

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=sorted(BUS_ADAPTERS))
def bus_factory(request):
    return BUS_ADAPTERS[request.param]


def probe(seq: int, subject: str = "study-1") -> Event:
    return Event("bus.probe", subject=subject, data={"seq": seq}, source="/yilian/test")


async def test_published_events_reach_every_group_in_order(bus_factory, tmp_path):
    async with bus_factory(tmp_path) as (bus, _store):
        got: dict[str, list[int]] = {"a": [], "b": []}
        for group in got:
            async def handler(e: Event, group=group) -> None:
                got[group].append(e.data["seq"])
            bus.subscribe(group, ["bus.probe"], handler)
        await bus.start()
        try:
            await bus.publish(*(probe(i) for i in range(20)))
            await wait_for(lambda: len(got["a"]) == 20 and len(got["b"]) == 20, timeout=30,
                           what="both groups to receive 20 events")
            assert got["a"] == list(range(20)) and got["b"] == list(range(20))
        finally:
            await bus.stop()


async def test_publish_rejects_invalid_events(bus_factory, tmp_path):
    async with bus_factory(tmp_path) as (bus, _store):
        with pytest.raises(InvalidEvent):
            await bus.publish(Event("bus.probe", subject="x", data={"seq": "nope"}))
        with pytest.raises(InvalidEvent):
            await bus.publish(Event("no.such_type", subject="x", data={}))


async def test_failing_handler_is_retried_then_dead_lettered(bus_factory, tmp_path):
    async with bus_factory(tmp_path) as (bus, store):
        attempts: dict[int, int] = {}
        handled: list[int] = []

        async def handler(e: Event) -> None:
            seq = e.data["seq"]
            attempts[seq] = attempts.get(seq, 0) + 1
            if seq == 1:
                raise RuntimeError("poison")
            if seq == 2 and attempts[seq] == 1:
                raise RuntimeError("transient")
            handled.append(seq)
        bus.subscribe("g", ["bus.probe"], handler)
        await bus.start()
        try:
            await bus.publish(probe(1), probe(2), probe(3))
            await wait_for(lambda: handled == [2, 3], timeout=30, what="events after the poison one")
            assert attempts[1] == 3  # max_attempts
            await wait_for(lambda: store.count("dead_letters", {"group": "g"}), timeout=30,
                           what="the poison event in dead letters")
            letter = (await store.find("dead_letters", {"group": "g"}))[0]
            assert "poison" in letter["reason"] and letter["envelope"]["data"]["seq"] == 1
        finally:
            await bus.stop()


async def test_unacknowledged_events_are_redelivered_after_restart(bus_factory, tmp_path):
    seen: list[int] = []

    async def handler(e: Event) -> None:
        seen.append(e.data["seq"])

    async with bus_factory(tmp_path) as (bus, _store):
        bus.subscribe("g", ["bus.probe"], handler)
        await bus.start()
        await bus.publish(*(probe(i) for i in range(5)))
        await wait_for(lambda: len(seen) == 5, timeout=30, what="first five events")
        await bus.stop()
        await bus.publish(*(probe(i) for i in range(5, 10)))  # published while the group is down
    first_run = list(seen)
    async with bus_factory(tmp_path) as (bus, _store):
        bus.subscribe("g", ["bus.probe"], handler)
        await bus.start()
        try:
            await wait_for(lambda: set(range(10)) <= set(seen), timeout=30, what="events published while down")
        finally:
            await bus.stop()
    assert first_run == list(range(5))
    assert seen[5:] == list(range(5, 10))  # acknowledged ones are not delivered again


async def test_ping_and_lag(bus_factory, tmp_path):
    async with bus_factory(tmp_path) as (bus, _store):
        async def handler(e: Event) -> None:
            pass
        bus.subscribe("g", ["bus.probe"], handler)
        await bus.ping()
        await bus.start()
        try:
            await bus.publish(probe(1))
            await wait_for(lambda: _lag_zero(bus), timeout=30, what="lag to reach zero")
        finally:
            await bus.stop()


async def _lag_zero(bus) -> bool:
    return all(v == 0 for v in (await bus.lag()).values())
