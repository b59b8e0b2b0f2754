"""A real runtime for workflow tests: SQLite store and embedded bus in tmp_path, a clock the test drives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from services.core.auth import Principal
from services.core.events import Event
from services.core.runtime import Runtime, build_runtime
from services.core.settings import Settings
from services.workflow import WorkflowService
from services.workflow.leases import WorkflowSettings

from ..support import EXAMPLE_CONSORTIUM, ManualClock

LEASE_SECONDS = 60.0
T0 = 1_795_000_000.0  # 2026-11-18, a fixed start so times in assertions are readable


@dataclass
class World:
    rt: Runtime
    service: WorkflowService
    clock: ManualClock

    @property
    def store(self):
        return self.rt.store

    def who(self, user_id: str) -> Principal:
        user = self.rt.consortium.users[user_id]
        return Principal(user.id, user.role, user.organization, user.centre, "test", centres=user.centres)

    async def add_study(self, uid: str, organization: str, modalities: list[str], *, received: bool = True,
                        announce: bool = True, revision: int = 1, event_id: str | None = None,
                        patient_id: str = "P1", patient_name: str = "张^三") -> Event | None:
        """What the PACS gateway does: index the study, then announce it with ``study.received``."""
        async with self.store.transaction() as tx:
            await tx.put("studies", {"id": uid, "organization": organization, "modalities": sorted(modalities),
                                     "patient_id": patient_id, "patient_name": patient_name,
                                     "state": "received" if received else "receiving",
                                     "revision": revision if received else 0, "series_count": 1,
                                     "instance_count": 1})
        if not (received and announce):
            return None
        kw = {"id": event_id} if event_id else {}
        event = Event("study.received", subject=uid, source="/yilian/pacs_gateway", data={
            "study_uid": uid, "organization": organization, "series_count": 1, "instance_count": 1,
            "modalities": sorted(modalities), "revision": revision, "patient_id": patient_id}, **kw)
        await self.rt.bus.publish(event)
        return event

    async def events(self, subject: str | None = None, types: tuple[str, ...] | None = None) -> list[Event]:
        logged = await self.store.read_log(0, limit=100_000)
        return [le.event for le in logged if (subject is None or le.event.subject == subject)
                and (types is None or le.event.type in types)]

    async def drained(self) -> bool:
        return (await self.rt.bus.lag()).get("workflow", 0) == 0

    async def handled(self, event: Event) -> bool:
        return await self.store.get("handled_events", f"workflow|{event.id}") is not None


@pytest.fixture
async def world(tmp_path) -> AsyncIterator[World]:
    settings = Settings(data_dir=tmp_path, consortium_path=EXAMPLE_CONSORTIUM,
                        store_url=f"sqlite:///{tmp_path / 'yilian.db'}?synchronous=NORMAL", bus_url="embedded:",
                        blob_url=f"file://{tmp_path / 'blobs'}")
    rt = await build_runtime(settings)
    rt.bus.poll_interval = 0.05
    clock = ManualClock(T0)
    # A long sweep interval: tests call sweep() themselves after moving the clock.
    service = WorkflowService(rt, WorkflowSettings(lease_seconds=LEASE_SECONDS, sweep_interval=3600, clock=clock))
    await service.start()
    await rt.bus.start()
    try:
        yield World(rt, service, clock)
    finally:
        await service.stop()
        await rt.bus.stop()
        await rt.blobs.close()
        await rt.store.close()
