"""Two workflow instances in one Kafka consumer group (Tansu broker) over one shared store:
every study.received is handled in effect exactly once, even when the broker delivers it twice."""

from __future__ import annotations

import contextlib
import hashlib

import pytest

from services.core.auth import Principal
from services.core.bus.kafka import KafkaBus
from services.core.bus.port import RetryPolicy
from services.core.consortium import load_consortium
from services.core.events import Event, registry
from services.core.runtime import Runtime
from services.core.settings import Settings
from services.core.store.sqlite import SqliteStore
from services.workflow import WorkflowService, queries
from services.workflow.commands import RequestReading
from services.workflow.leases import WorkflowSettings
from services.workflow.service import execute, site_rule_request_id

from ..support import EXAMPLE_CONSORTIUM, wait_for
from ..tansu import _stop_session_tansu, tansu_url  # noqa: F401 - fixtures used by name

pytestmark = pytest.mark.kafka

STUDIES = 12


class CountingWorkflow(WorkflowService):
    """The real service, counting the deliveries it gets."""

    deliveries = 0

    async def _on_study_received(self, event: Event) -> None:
        self.deliveries += 1
        await super()._on_study_received(event)


def received(uid: str, organization: str, modality: str) -> Event:
    return Event("study.received", subject=uid, source="/yilian/pacs_gateway", data={
        "study_uid": uid, "organization": organization, "series_count": 1, "instance_count": 1,
        "modalities": [modality], "revision": 1, "patient_id": f"P-{uid.rsplit('.', 1)[1]}"})


async def test_two_instances_one_group_no_double_effect_none_lost(tmp_path, tansu_url):  # noqa: F811
    prefix = "wf" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10] + "."
    url = f"{tansu_url}?prefix={prefix}&partitions=2&session_timeout_ms=1000"
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    settings = Settings(data_dir=tmp_path, consortium_path=EXAMPLE_CONSORTIUM, store_url=db, bus_url=url,
                        blob_url=f"file://{tmp_path / 'blobs'}")
    consortium = load_consortium(EXAMPLE_CONSORTIUM)
    runtimes: list[Runtime] = []
    services: list[CountingWorkflow] = []
    try:
        for _ in range(2):  # two "containers": own store connection, own bus, same group
            store = SqliteStore(db, validate=registry().validate)
            await store.open()
            bus = KafkaBus(url, store=store, validate=registry().validate, idempotent=False,
                           retry=RetryPolicy(max_attempts=3, first_backoff=0.01))
            rt = Runtime(settings, consortium, store, bus, None, registry())  # type: ignore[arg-type]
            runtimes.append(rt)
            services.append(CountingWorkflow(rt, WorkflowSettings(lease_seconds=60, sweep_interval=3600)))
        for rt, service in zip(runtimes, services):
            await service.start()
            await rt.bus.start()

        # Explicit requests that wait for their studies, made through instance A.
        clinic = runtimes[0].consortium.users["cg-clinic"]
        actor = Principal(clinic.id, clinic.role, clinic.organization, clinic.centre, "t")
        waiting = []
        for n in range(3):
            waiting.append(await execute(runtimes[0], RequestReading(f"1.2.3.8.{n}", "imaging", "routine", "q"),
                                         actor=actor))
        events = [received(f"1.2.3.7.{n}", "zhangzhuang-vc", "ECG") for n in range(STUDIES)]
        events += [received(f"1.2.3.8.{n}", "chengguan-thc", "CT") for n in range(3)]
        publisher = runtimes[0].bus
        await publisher.publish(*events)
        await publisher.publish(*events[:5])  # the broker delivers these twice: same event ids

        store = runtimes[0].store

        async def all_queued() -> bool:
            return await store.count("reading_requests", {"state": "queued"}) == STUDIES + 3
        await wait_for(all_queued, timeout=60, what="every request queued")
        await wait_for(lambda: _handled_everything(store, len(events)), timeout=30, what="all events handled")

        docs = await queries.requests_of(store, limit=1000)
        assert len(docs) == STUDIES + 3
        assert {d["id"] for d in docs} >= {site_rule_request_id(f"1.2.3.7.{n}", "ecg") for n in range(STUDIES)}
        assert {d["centre"] for d in docs if d["kind"] == "ecg"} == {"county-ecg"}
        for w in waiting:
            assert (await queries.get_request(store, w["id"]))["state"] == "queued"
        # Every delivery (20 records, 5 of them twice-published) reached a handler; effects happened once.
        # (the redelivered duplicates may still be in flight on the other partition: wait for them)
        await wait_for(lambda: sum(s.deliveries for s in services) >= len(events) + 5, timeout=30,
                       what="every delivery, duplicates included, to reach a handler")
        log = [le.event for le in await store.read_log(0, limit=100_000)]
        for doc in docs:
            types = [e.type for e in log if e.subject == doc["id"]]
            assert types == ["reading.requested", "reading.queued"], (doc["id"], types)
        assert await store.count("dead_letters") == 0
    finally:
        for rt, service in zip(runtimes, services):
            with contextlib.suppress(Exception):
                await service.stop()
            with contextlib.suppress(Exception):
                await rt.bus.stop()
            await rt.store.close()


async def _handled_everything(store, n: int) -> bool:
    return await store.count("handled_events", {"group": "workflow"}) == n
