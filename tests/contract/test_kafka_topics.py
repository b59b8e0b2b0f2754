"""Topics that come back different: a broker that lost its topics, or a topic with other partitions.

The bus checks partition counts at start and after every outage, adds partitions where the
broker can (Tansu cannot: CreatePartitions is unsupported), refuses with a clear error where
it cannot, makes its consumers join again when a topic was re-created under them, and the
relay publishes again, from the outbox, what the broker lost.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.core.bus.outage import OUTAGE
from services.core.bus.port import TopicMismatch
from services.core.bus.relay import OutboxRelay
from services.core.events import Event

from ..support import wait_for
from .test_relay import GROUP, Effects, emit, new_bus, sqlite

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

SOURCE = "/yilian/test"


def probe(seq: int) -> Event:
    return Event("bus.probe", subject=f"study-{seq}", data={"seq": seq}, source=SOURCE)


async def create_topic(broker_url: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker_url.removeprefix("kafka://"))
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, partitions, 1)])
        assert response.topic_errors[0][1] == 0, response
    finally:
        await admin.close()


async def test_a_topic_with_fewer_partitions_than_configured_is_refused_at_start(tmp_path, tansu_url):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await create_topic(tansu_url, f"{prefix}yilian.bus", 1)
    async with sqlite(tmp_path) as store:
        bus = new_bus(f"{tansu_url}?prefix={prefix}&partitions=2&session_timeout_ms=1000", store)
        bus.subscribe(GROUP, ["bus.probe"], Effects(store).handler("a"))
        with pytest.raises(TopicMismatch) as refused:
            await bus.start()
        await bus.stop()
    message = str(refused.value)
    assert f"topic '{prefix}yilian.bus' has 1 partition(s) where the bus URL says partitions=2" in message
    assert "set partitions=1 in YILIAN_BUS_URL" in message


@asynccontextmanager
async def consuming(store, url: str):
    """A process's bus: one consumer group applying bus.probe, and the relay of SOURCE."""
    effects = Effects(store)
    bus = new_bus(url, store)
    bus.subscribe(GROUP, ["bus.probe"], effects.handler("a"))
    relay = OutboxRelay(store, bus, sources=[SOURCE])
    await bus.start()
    await relay.start()
    try:
        yield effects, bus, relay
    finally:
        await relay.stop()
        await bus.stop()


async def broker_back_without_topics(broker, topic: str, partitions: int) -> None:
    """Stop the broker until the bus sees the outage; start it (memory storage: every topic,
    record and group is gone) and re-create ``topic`` with ``partitions``, as a broker that
    auto-creates topics does when a client names one."""
    broker.stop()
    await wait_for(lambda: OUTAGE.active, timeout=20, what="the bus to see the outage")
    broker.start()
    await create_topic(broker.url, topic, partitions)


async def test_after_a_broker_lost_its_topics_consumers_join_again_and_lost_events_are_published_again(
        tmp_path, tansu_broker):
    url = f"{tansu_broker.url}?prefix=back.&partitions=2&session_timeout_ms=1000"
    async with sqlite(tmp_path) as store, consuming(store, url) as (effects, bus, relay):
        later: list[object] = []
        try:
            await emit(store, *(probe(i) for i in range(4)))
            await wait_for(lambda: effects.all_applied() == [0, 1, 2, 3], timeout=30, what="events before")
            await wait_for(lambda: len(bus.assignment(GROUP)) == 2, timeout=10, what="both partitions assigned")

            await broker_back_without_topics(tansu_broker, "back.yilian.bus", 4)
            # What the broker lost is published again, from the outbox; applied once.
            await wait_for(lambda: len(effects.deliveries) >= 8, timeout=30, what="lost events published again")
            assert effects.all_applied() == [0, 1, 2, 3]
            await wait_for(lambda: len(bus.assignment(GROUP)) == 4, timeout=30,
                           what="the consumer to join again and read all 4 partitions")

            # A process started now (fresh metadata) sends to all 4 partitions: none is left unread.
            publisher = new_bus(url, store)
            later.append(publisher)
            fresh = OutboxRelay(store, publisher, sources=["/yilian/later"])
            later.append(fresh)
            await fresh.start()
            await emit(store, *(Event("bus.probe", subject=f"s-{i}", data={"seq": i}, source="/yilian/later")
                                for i in range(4, 24)))
            await wait_for(lambda: effects.all_applied() == list(range(24)), timeout=30,
                           what="every event sent after the broker came back")
        finally:
            for thing in reversed(later):
                await thing.stop()


async def test_a_topic_back_with_fewer_partitions_is_refused_and_its_events_wait_in_the_outbox(
        tmp_path, tansu_broker):
    url = f"{tansu_broker.url}?prefix=few.&partitions=4&session_timeout_ms=1000"
    async with sqlite(tmp_path) as store, consuming(store, url) as (effects, bus, relay):
        await emit(store, probe(0))
        await wait_for(lambda: effects.all_applied() == [0], timeout=30, what="an event before")

        await broker_back_without_topics(tansu_broker, "few.yilian.bus", 2)
        await emit(store, *(probe(i) for i in range(1, 9)))
        await wait_for(lambda: relay.failures >= 2, timeout=30, what="the relay to be refused")
        with pytest.raises(TopicMismatch, match="'few.yilian.bus' has 2 partition.s. where the bus URL says "
                                                 "partitions=4"):
            await bus.publish(probe(99))
        assert [e.event.data["seq"] for e in await store.read_unrelayed(source=SOURCE)] == list(range(9))
        await asyncio.sleep(0.5)
        assert effects.all_applied() == [0]
