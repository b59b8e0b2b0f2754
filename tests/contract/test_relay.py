"""The outbox relay with a SQLite store and the Kafka bus on Tansu.

Events are emitted in store transactions (the outbox); the relay publishes them to Kafka;
consumers apply each effect once (``tx.first_time``) although delivery is at least once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager

import pytest

from services.core.bus.kafka import KafkaBus
from services.core.bus.port import RetryPolicy
from services.core.bus.relay import OutboxRelay
from services.core.holders import Holder
from services.core.events import Event, registry
from services.core.store.sqlite import SqliteStore

from ..support import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

SOURCE = "/yilian/test"
GROUP = "readers"


def probe(seq: int, subject: str = "study-1") -> Event:
    return Event("bus.probe", subject=subject, data={"seq": seq}, source=SOURCE)


def bus_url(base: str, prefix: str) -> str:
    return f"{base}?prefix={prefix}&partitions=2&session_timeout_ms=1000"


@asynccontextmanager
async def sqlite(tmp_path):
    store = SqliteStore(f"sqlite:///{tmp_path / 'relay.db'}", validate=registry().validate)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def new_bus(url: str, store) -> KafkaBus:
    return KafkaBus(url, store=store, validate=registry().validate, idempotent=False, timeout=2.0,
                    retry=RetryPolicy(max_attempts=3, first_backoff=0.01))


class Effects:
    """What consumers did: every delivery, and the effects applied once per event id."""

    def __init__(self, store) -> None:
        self.store = store
        self.deliveries: list[str] = []
        self.applied: dict[str, list[int]] = {}  # consumer name -> seqs it applied

    def handler(self, name: str):
        async def apply(event: Event) -> None:
            self.deliveries.append(event.id)
            async with self.store.transaction() as tx:
                first = await tx.first_time(GROUP, event.id)
            if first:
                self.applied.setdefault(name, []).append(event.data["seq"])
        return apply

    def all_applied(self) -> list[int]:
        return sorted(s for seqs in self.applied.values() for s in seqs)


async def emit(store, *events: Event) -> None:
    for event in events:
        async with store.transaction() as tx:
            tx.emit(event)


async def test_events_committed_in_transactions_reach_the_group_once(tmp_path, tansu_url):
    async with sqlite(tmp_path) as store:
        bus = new_bus(bus_url(tansu_url, f"r{uuid.uuid4().hex[:10]}."), store)
        effects = Effects(store)
        bus.subscribe(GROUP, ["bus.probe"], effects.handler("a"))
        relay = OutboxRelay(store, bus, sources=[SOURCE])
        await relay.start()
        await bus.start()
        try:
            await emit(store, *(probe(i, subject=f"study-{i % 3}") for i in range(30)))
            await wait_for(lambda: len(effects.all_applied()) == 30, timeout=30, what="30 events applied")
            assert effects.all_applied() == list(range(30))
            assert await store.read_unrelayed(source=SOURCE) == []
            # Within one subject (one partition) order is kept.
            for subject in range(3):
                seqs = [s for s in effects.applied["a"] if s % 3 == subject]
                assert seqs == sorted(seqs)
        finally:
            await relay.stop()
            await bus.stop()


async def test_transactions_commit_while_the_broker_is_down_and_are_relayed_when_it_returns(
        tmp_path, tansu_broker):
    async with sqlite(tmp_path) as store:
        bus = new_bus(bus_url(tansu_broker.url, "down."), store)
        effects = Effects(store)
        bus.subscribe(GROUP, ["bus.probe"], effects.handler("a"))
        relay = OutboxRelay(store, bus, sources=[SOURCE], retry=RetryPolicy(first_backoff=0.05, max_backoff=0.5))
        await relay.start()
        await bus.start()
        try:
            await emit(store, *(probe(i) for i in range(3)))
            await wait_for(lambda: len(effects.all_applied()) == 3, timeout=30, what="events before the outage")

            tansu_broker.stop()
            started = time.monotonic()
            await emit(store, *(probe(i, subject=f"study-{i}") for i in range(3, 13)))
            assert time.monotonic() - started < 2, "store transactions must not wait for the broker"
            await wait_for(lambda: relay_failing(relay), timeout=15, what="the relay to notice the outage")
            assert len(await store.read_unrelayed(source=SOURCE)) == 10  # kept in the outbox

            # Memory storage: the restarted broker has lost every topic, offset and group.
            tansu_broker.start()
            await wait_for(lambda: len(effects.all_applied()) == 13, timeout=60,
                           what="events committed during the outage to be delivered")
            assert effects.all_applied() == list(range(13))
            assert await store.read_unrelayed(source=SOURCE) == []
        finally:
            await relay.stop()
            await bus.stop()


def relay_failing(relay: OutboxRelay) -> bool:
    return relay.failures > 0


async def test_two_consumers_in_one_group_share_the_work_and_apply_each_event_once(tmp_path, tansu_url):
    url = bus_url(tansu_url, f"r{uuid.uuid4().hex[:10]}.")
    async with sqlite(tmp_path) as store:
        effects = Effects(store)
        buses = [new_bus(url, store) for _ in range(2)]
        for name, bus in zip("ab", buses):
            bus.subscribe(GROUP, ["bus.probe"], effects.handler(name))
        relay = OutboxRelay(store, buses[0], sources=[SOURCE])
        await asyncio.gather(*(bus.start() for bus in buses))
        try:
            # Publish once the group has settled on one partition each.
            await wait_for(lambda: all(len(b.assignment(GROUP)) == 1 for b in buses), timeout=30,
                           what="each consumer to own one partition")
            await relay.start()
            await emit(store, *(probe(i, subject=f"study-{i}") for i in range(40)))
            await wait_for(lambda: len(effects.all_applied()) == 40, timeout=30, what="40 events applied")
            assert effects.all_applied() == list(range(40))
            assert effects.applied.get("a") and effects.applied.get("b"), effects.applied
            assert len(effects.deliveries) >= 40
        finally:
            await relay.stop()
            await asyncio.gather(*(bus.stop() for bus in buses))


# --- who relays: one lease per partition (event source) of the outbox ------------------

API, WORKFLOW = "/yilian/api", "/yilian/workflow"


def signed(seq: int, source: str = WORKFLOW) -> Event:
    return Event("bus.probe", subject=f"request-{seq}", data={"seq": seq}, source=source)


async def test_two_processes_of_one_service_relay_a_backlog_once(tmp_path, tansu_url):
    """After an outage both workflow processes find the same backlog: only the lease holder publishes it."""
    url = bus_url(tansu_url, f"r{uuid.uuid4().hex[:10]}.")
    async with sqlite(tmp_path) as store:
        effects = Effects(store)
        consumer = new_bus(url, store)
        consumer.subscribe(GROUP, ["bus.probe"], effects.handler("a"))
        await consumer.start()
        await emit(store, *(signed(i) for i in range(60)))  # the backlog, before either relay runs
        buses = [new_bus(url, store) for _ in range(2)]
        relays = [OutboxRelay(store, bus, sources=[WORKFLOW], lease_seconds=2) for bus in buses]
        await asyncio.gather(*(relay.start() for relay in relays))
        try:
            await wait_for(lambda: len(effects.all_applied()) == 60, timeout=30, what="the backlog applied")
            await asyncio.sleep(0.5)  # a second relay's copy would arrive by now
            assert len(effects.deliveries) == 60, "each event published by one process only"
            assert sum(relay.relayed for relay in relays) == 60
            assert [bool(relay.held) for relay in relays].count(True) == 1
        finally:
            await asyncio.gather(*(relay.stop() for relay in relays))
            await asyncio.gather(*(bus.stop() for bus in (consumer, *buses)))


async def test_a_process_relays_another_services_events_while_no_process_of_it_runs(tmp_path, tansu_url):
    """The api's workflow commands write events with the workflow's source: with no workflow
    process running, the api relays them, and gives the partition back once a workflow process runs."""
    url = bus_url(tansu_url, f"r{uuid.uuid4().hex[:10]}.")
    async with sqlite(tmp_path) as store:
        effects = Effects(store)
        bus = new_bus(url, store)
        bus.subscribe(GROUP, ["bus.probe"], effects.handler("a"))
        await bus.start()
        api = OutboxRelay(store, bus, sources=[API, WORKFLOW], own=[API], lease_seconds=1)
        await api.start()
        workflow: OutboxRelay | None = None
        try:
            await emit(store, *(signed(i) for i in range(4)), signed(4, source=API))
            await wait_for(lambda: len(effects.all_applied()) == 5, timeout=30,
                           what="the api's signed reports relayed with no workflow process")
            await wait_for(lambda: WORKFLOW not in api.held, timeout=10, what="the api to give the partition back")
            assert API in api.held

            workflow = OutboxRelay(store, new_bus(url, store), sources=[API, WORKFLOW], own=[WORKFLOW],
                                   lease_seconds=1)
            await workflow.start()
            await wait_for(lambda: WORKFLOW in workflow.held, timeout=10, what="the workflow process to take its own")
            await emit(store, *(signed(i) for i in range(5, 8)))
            await wait_for(lambda: len(effects.all_applied()) == 8, timeout=30, what="later events relayed")
            assert workflow.relayed == 3 and API not in workflow.held
        finally:
            if workflow is not None:
                await workflow.stop()
                await workflow.bus.stop()
            await api.stop()
            await bus.stop()


async def test_a_partition_of_a_gone_holder_on_this_data_directory_is_taken_at_once(tmp_path, tansu_url):
    """A process restarted after kill -9 on the same data directory (core/holders.py) does not
    wait for its dead predecessor's lease: the lock file says the holder is gone."""
    url = bus_url(tansu_url, f"r{uuid.uuid4().hex[:10]}.")
    holders_dir = tmp_path / "holders"
    async with sqlite(tmp_path) as store:
        effects = Effects(store)
        bus = new_bus(url, store)
        bus.subscribe(GROUP, ["bus.probe"], effects.handler("a"))
        await bus.start()
        dead, alive = Holder(holders_dir), Holder(holders_dir)
        dead.open()
        alive.open()
        first = OutboxRelay(store, bus, sources=[WORKFLOW], lease_seconds=600, holder=dead)
        second = OutboxRelay(store, bus, sources=[WORKFLOW], lease_seconds=600, poll_interval=0.05, holder=alive)
        await first.start()
        try:
            await wait_for(lambda: WORKFLOW in first.held, timeout=10, what="the first process to hold the lease")
            first._task.cancel()  # killed: its 600 s lease stays in the store
            first.held.clear()
            await dead.stop()  # ... and the kernel dropped its lock
            await second.start()
            await emit(store, *(signed(i) for i in range(3)))
            await wait_for(lambda: len(effects.all_applied()) == 3, timeout=15,
                           what="the restarted process to relay without waiting for the lease")
            assert WORKFLOW in second.held
        finally:
            await first.stop()
            await second.stop()
            await alive.stop()
            await bus.stop()


async def test_a_dead_holders_partition_is_taken_over_when_its_lease_expires(tmp_path, tansu_url):
    url = bus_url(tansu_url, f"r{uuid.uuid4().hex[:10]}.")
    async with sqlite(tmp_path) as store:
        effects = Effects(store)
        bus = new_bus(url, store)
        bus.subscribe(GROUP, ["bus.probe"], effects.handler("a"))
        await bus.start()
        first = OutboxRelay(store, bus, sources=[WORKFLOW], lease_seconds=1)
        second = OutboxRelay(store, bus, sources=[WORKFLOW], lease_seconds=1)
        await first.start()
        try:
            await wait_for(lambda: WORKFLOW in first.held, timeout=10, what="the first process to hold the lease")
            await second.start()
            first._task.cancel()  # killed: its lease stays in the store until it expires
            first.held.clear()
            await emit(store, *(signed(i) for i in range(3)))
            started = time.monotonic()
            await wait_for(lambda: len(effects.all_applied()) == 3, timeout=30, what="the second process to relay")
            assert WORKFLOW in second.held
            assert time.monotonic() - started < 1 + 1 + 2  # lease, a renewal period, slack
        finally:
            await first.stop()
            await second.stop()
            await bus.stop()
