"""A Kafka broker outage in the log: one line when it begins, one when it ends, the rest counted."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from services.core.bus.outage import OUTAGE
from services.core.events import Event
from services.core.metrics import render

from ..support import wait_for
from .test_relay import GROUP, Effects, bus_url, emit, new_bus, sqlite

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

SOURCE = "/yilian/test"


class Lines(logging.Handler):
    """Every warning or error any logger writes."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def probe(seq: int) -> Event:
    return Event("bus.probe", subject=f"study-{seq}", data={"seq": seq}, source=SOURCE)


async def test_a_broker_outage_is_logged_once_and_its_retries_counted(tmp_path, tansu_broker):
    from services.core.bus.relay import OutboxRelay
    async with sqlite(tmp_path) as store:
        bus = new_bus(bus_url(tansu_broker.url, "out."), store)
        effects = Effects(store)
        bus.subscribe(GROUP, ["bus.probe"], effects.handler("a"))
        bus.subscribe("second", ["study.received"], effects.handler("b"))
        relay = OutboxRelay(store, bus, sources=[SOURCE])
        await relay.start()
        await bus.start()
        lines = Lines()
        logging.getLogger().addHandler(lines)
        ends: list[logging.LogRecord] = []
        ended = logging.Handler(logging.INFO)
        ended.emit = lambda r: ends.append(r) if r.getMessage() == "kafka broker reachable again" else None
        bus_log = logging.getLogger("yilian.bus")
        level = bus_log.level
        bus_log.setLevel(logging.INFO)
        bus_log.addHandler(ended)
        counted, outages = OUTAGE.counted, OUTAGE.outages
        try:
            await emit(store, probe(0))
            await wait_for(lambda: effects.all_applied() == [0], timeout=30, what="an event before the outage")

            tansu_broker.stop()
            await emit(store, probe(1))
            await asyncio.sleep(5)  # clients retry all along
            assert OUTAGE.active
            assert "yilian_bus_broker_reachable 0" in render(bus.figures())
            tansu_broker.start()
            started = time.monotonic()
            await wait_for(lambda: not OUTAGE.active, timeout=20, what="the end of the outage")
            assert time.monotonic() - started < 5
            await wait_for(lambda: effects.all_applied() == [0, 1], timeout=60, what="the event of the outage")

            # The broker (memory storage) came back without its topics: that is said per topic, and
            # the events it lost are published again; see test_kafka_topics.py.
            messages = [m for r in lines.records if not (m := r.getMessage()).startswith((
                "kafka topic was re-created", "events the broker lost", "kafka consumer group joins again"))]
            assert messages.count("kafka broker unreachable; its client's errors are counted, not logged, "
                                  "until it answers") == 1, messages
            assert len(messages) <= 4, messages  # that line, the relay's first failure, and little else
            assert len(ends) == 1 and ends[0].log_lines_counted > 20
            assert OUTAGE.outages == outages + 1 and OUTAGE.counted - counted > 20
            exposition = render(bus.figures())
            assert f"yilian_bus_outage_log_lines_total {OUTAGE.counted}" in exposition
            assert "yilian_bus_broker_reachable 1" in exposition
        finally:
            logging.getLogger().removeHandler(lines)
            bus_log.removeHandler(ended)
            bus_log.setLevel(level)
            await relay.stop()
            await bus.stop()
