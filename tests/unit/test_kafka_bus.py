"""KafkaBus specifics beyond the bus contract: URL, wire format, bad records, outages, stop."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.core.bus.kafka import KafkaBus, KafkaConfig
from services.core.bus.port import BusUnavailable, RetryPolicy
from services.core.events import Event, registry
from services.core.store.port import StoreUnavailable

from ..contract.adapters import sqlite_store
from ..support import free_port, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


def probe(seq: int, subject: str = "study-1") -> Event:
    return Event("bus.probe", subject=subject, data={"seq": seq}, source="/yilian/test")


def new_bus(url: str, store, **kw) -> KafkaBus:
    return KafkaBus(url, store=store, validate=registry().validate, idempotent=False,
                    retry=RetryPolicy(max_attempts=2, first_backoff=0.01), **kw)


def test_url_names_brokers_and_options():
    config = KafkaConfig.from_url("kafka://k1:9092,k2:9093?partitions=12&replication=3&prefix=site1.")
    assert config.servers == "k1:9092,k2:9093"
    assert (config.partitions, config.replication, config.prefix) == (12, 3, "site1.")
    assert KafkaConfig.from_url("kafka://k1:9092").partitions == 6


@pytest.mark.parametrize("url, message", [
    ("kafka://", "kafka://host:9092"),
    ("kafka://k1", "not host:port"),
    ("kafka://k1:9092?partitions=0", "partitions must be a positive integer"),
    ("kafka://k1:9092?partions=3", "unknown option(s) partions"),
])
def test_bad_url_is_a_clear_error(url, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KafkaConfig.from_url(url)


async def test_unreachable_broker_fails_fast_and_precisely(tmp_path):
    async with sqlite_store(tmp_path) as store:
        bus = new_bus(f"kafka://127.0.0.1:{free_port()}", store, timeout=2.0)
        started = time.monotonic()
        with pytest.raises(BusUnavailable, match="unreachable"):
            await bus.ping()
        with pytest.raises(BusUnavailable, match=r"127\.0\.0\.1"):
            await bus.publish(probe(1))
        assert time.monotonic() - started < 10


async def test_publish_fails_within_its_timeout_when_the_broker_dies(tmp_path, tansu_broker):
    async with sqlite_store(tmp_path) as store:
        bus = new_bus(tansu_broker.url, store, timeout=2.0)
        await bus.publish(probe(1))
        tansu_broker.stop()
        started = time.monotonic()
        with pytest.raises(BusUnavailable, match="not acknowledged within 2s|not published|unreachable|cannot create"):
            await bus.publish(probe(2))
        assert time.monotonic() - started < 6
        with pytest.raises(BusUnavailable):
            await bus.ping()
        await bus.stop()


async def test_wire_format_bad_records_and_other_types(tmp_path, tansu_url):
    prefix = f"u{uuid.uuid4().hex[:10]}."
    url = f"{tansu_url}?prefix={prefix}&partitions=2&session_timeout_ms=1000"
    servers = tansu_url.removeprefix("kafka://")
    async with sqlite_store(tmp_path) as store:
        bus = new_bus(url, store)
        got: list[int] = []

        async def handler(e: Event) -> None:
            got.append(e.data["seq"])
        bus.subscribe("g", ["bus.probe"], handler)
        await bus.start()
        producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=False)
        await producer.start()
        try:
            topic = prefix + "yilian.bus"
            await bus.publish(probe(1))
            await producer.send_and_wait(topic, b"{not json", key=b"study-1")
            bad_schema = probe(2).to_dict() | {"data": {"seq": "two"}}
            await producer.send_and_wait(topic, json.dumps(bad_schema).encode(), key=b"study-1",
                                         headers=[("ce_type", b"bus.probe")])
            await producer.send_and_wait(topic, b"whatever", key=b"study-1", headers=[("ce_type", b"bus.other")])
            await bus.publish(probe(3))

            await wait_for(lambda: got == [1, 3], timeout=30, what="the two valid probes")
            async def two_letters() -> bool:
                return await store.count("dead_letters", {"group": "g"}) == 2
            await wait_for(two_letters, timeout=30, what="two dead letters in the store")
            reasons = [d["reason"] for d in await store.find("dead_letters", {"group": "g"})]
            assert all(r.startswith("invalid: ") for r in reasons)
            assert any("not JSON" in r for r in reasons) and any("data invalid at seq" in r for r in reasons)
            await wait_for(lambda: _lag_is(bus, 0), timeout=30, what="skipped and dead-lettered records committed")

            # Wire format of published events, and the dead-letter topic.
            records = await _read_all(servers, [topic, prefix + "yilian.dead_letter"], expected=7)
            published = [r for r in records if r.topic == topic and dict(r.headers).get("ce_id")]
            assert {r.key for r in published} == {b"study-1"}
            first = json.loads(published[0].value)
            assert first["specversion"] == "1.0" and dict(published[0].headers)["ce_type"] == b"bus.probe"
            assert dict(published[0].headers)["ce_id"] == first["id"].encode()
            dead = [r for r in records if r.topic.endswith("dead_letter")]
            assert len(dead) == 2 and all(dict(r.headers)["reason"].startswith(b"invalid") for r in dead)
            assert b"{not json" in [r.value for r in dead]
        finally:
            await producer.stop()
            await bus.stop()


async def test_stop_finishes_and_commits_the_event_in_hand(tmp_path, tansu_url):
    prefix = f"s{uuid.uuid4().hex[:10]}."
    url = f"{tansu_url}?prefix={prefix}&partitions=1&session_timeout_ms=1000"
    async with sqlite_store(tmp_path) as store:
        entered, release = asyncio.Event(), asyncio.Event()
        seen: list[int] = []

        async def slow(e: Event) -> None:
            entered.set()
            await release.wait()
            seen.append(e.data["seq"])
        bus = new_bus(url, store)
        bus.subscribe("g", ["bus.probe"], slow)
        await bus.start()
        await bus.publish(probe(1))
        await asyncio.wait_for(entered.wait(), 30)
        stopping = asyncio.create_task(bus.stop())
        await asyncio.sleep(0)  # stop() has begun while the handler is still busy
        release.set()
        await stopping
        assert seen == [1]

        again = new_bus(url, store)
        again.subscribe("g", ["bus.probe"], slow)
        await again.start()
        try:
            await again.publish(probe(2))
            await wait_for(lambda: seen == [1, 2], timeout=30, what="the next event only")
        finally:
            await again.stop()


async def _lag_is(bus: KafkaBus, n: int) -> bool:
    return (await bus.lag()).get("g") == n


async def _read_all(servers: str, topics: list[str], *, expected: int) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # refresh metadata
        partitions = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list = []
        deadline = time.monotonic() + 20
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def test_record_is_read_again_when_dead_lettering_fails(tmp_path, tansu_url):
    """A bad record arriving while the store is unavailable is not skipped: it waits."""
    prefix = f"f{uuid.uuid4().hex[:10]}."
    url = f"{tansu_url}?prefix={prefix}&partitions=1&session_timeout_ms=1000"
    async with sqlite_store(tmp_path) as store:
        real_transaction = store.transaction
        refusals = []

        def flaky_transaction():
            if len(refusals) < 2:
                refusals.append(1)
                raise StoreUnavailable("database is restarting")
            return real_transaction()
        store.transaction = flaky_transaction
        got: list[int] = []

        async def handler(e: Event) -> None:
            got.append(e.data["seq"])
        bus = new_bus(url, store)
        bus.subscribe("g", ["bus.probe"], handler)
        await bus.start()
        producer = AIOKafkaProducer(bootstrap_servers=tansu_url.removeprefix("kafka://"), enable_idempotence=False)
        await producer.start()
        try:
            await bus.publish(probe(1))
            await producer.send_and_wait(prefix + "yilian.bus", b"\xff not an envelope", key=b"study-1")
            await bus.publish(probe(2))
            await wait_for(lambda: got == [1, 2], timeout=30, what="the event behind the bad record")
            assert len(refusals) == 2
            letters = await store.find("dead_letters", {"group": "g"})
            assert len(letters) == 1 and "not JSON" in letters[0]["reason"]
        finally:
            await producer.stop()
            await bus.stop()
