"""A real runtime for monitor tests: SQLite + embedded bus, workflow and monitor services on one
clock the test drives, the api on a free loopback port, and optionally the PACS gateway."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from services.api.service import ApiService
from services.core.auth import Principal, issue_token
from services.core.events import Event
from services.core.runtime import Runtime, build_runtime
from services.core.settings import Settings
from services.monitor import MonitorService, MonitorSettings
from services.monitor.views import MonitorViews
from services.workflow import WorkflowService
from services.workflow import commands as c
from services.workflow.leases import WorkflowSettings
from services.workflow.service import execute

from ..support import EXAMPLE_CONSORTIUM, ManualClock, free_port, wait_for

SECRET = "monitor-test-secret-" + "z" * 32
T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z = 19:06 Beijing time


@dataclass
class World:
    rt: Runtime
    workflow: WorkflowService
    monitor: MonitorService
    api: ApiService
    clock: ManualClock
    session: aiohttp.ClientSession
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def store(self):
        return self.rt.store

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    @property
    def views(self) -> MonitorViews:
        return MonitorViews(self.rt.store, self.rt.consortium, self.monitor.settings, self.rt.local_time)

    def who(self, user_id: str) -> Principal:
        user = self.rt.consortium.users[user_id]
        return Principal(user.id, user.role, user.organization, user.centre, "test")

    def token(self, user: str) -> str:
        if user not in self._tokens:
            self._tokens[user] = issue_token(self.rt.consortium, user, SECRET)
        return self._tokens[user]

    async def get(self, path: str, user: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        async with self.session.get(self.base + path, headers=headers) as resp:
            body = await resp.json() if resp.content_type.endswith("json") else await resp.text()
            return resp.status, body

    async def add_study(self, uid: str, organization: str, modalities: list[str]) -> None:
        """What the PACS gateway does: index the study, then announce it with ``study.received``."""
        async with self.store.transaction() as tx:
            await tx.put("studies", {"id": uid, "organization": organization, "modalities": sorted(modalities),
                                     "patient_id": "P-" + uid[-4:], "patient_name": "张^三", "state": "received",
                                     "revision": 1, "series_count": 1, "instance_count": 1})
            tx.emit(Event("study.received", subject=uid, source="/yilian/pacs_gateway", data={
                "study_uid": uid, "organization": organization, "series_count": 1, "instance_count": 1,
                "modalities": sorted(modalities), "revision": 1, "patient_id": "P-" + uid[-4:]}))

    async def request(self, uid: str, clinic: str, kind: str = "imaging", priority: str = "routine") -> dict:
        return await execute(self.rt, c.RequestReading(study_uid=uid, kind=kind, priority=priority,
                                                       clinical_question="远程阅片"), actor=self.who(clinic))

    async def claim(self, rid: str, reader: str) -> dict:
        return await execute(self.rt, c.Claim(rid), actor=self.who(reader))

    async def sign(self, rid: str, reader: str, *, critical: bool = False) -> dict:
        return await execute(self.rt, c.Sign(rid, findings="两肺纹理清晰", impression="未见明显异常",
                                             critical=critical,
                                             critical_category="张力性气胸" if critical else None),
                             actor=self.who(reader))

    async def drained(self) -> bool:
        lag = await self.rt.bus.lag()
        return lag.get("monitor", 0) == 0 and lag.get("workflow", 0) == 0

    async def settle(self, timeout: float = 30) -> None:
        await wait_for(self.drained, timeout=timeout, what="workflow and monitor to catch up")


async def start_world(tmp_path, *, with_gateway: bool = False, **overrides: Any) -> tuple[World, list]:
    settings = Settings(data_dir=tmp_path, consortium_path=EXAMPLE_CONSORTIUM,
                        store_url=f"sqlite:///{tmp_path / 'yilian.db'}?synchronous=NORMAL", bus_url="embedded:",
                        blob_url=f"file://{tmp_path / 'blobs'}", bind_host="127.0.0.1", http_port=free_port(),
                        dicom_port=free_port(), jwt_secret=SECRET, study_quiet_seconds=0.3)
    settings = dataclasses.replace(settings, **overrides)
    rt = await build_runtime(settings)
    rt.bus.poll_interval = 0.05
    clock = ManualClock(T0)
    workflow = WorkflowService(rt, WorkflowSettings(lease_seconds=4 * 3600, sweep_interval=3600, clock=clock))
    monitor = MonitorService(rt, MonitorSettings(clock=clock, stream_interval=0.1))
    services: list = [workflow, monitor]
    if with_gateway:
        from services.pacs_gateway import GatewayService
        services.insert(0, GatewayService(rt))
    api = ApiService(rt)
    services.append(api)
    for service in services:
        await service.start()
        rt.services.append(service)
    await rt.bus.start()
    session = aiohttp.ClientSession()
    return World(rt, workflow, monitor, api, clock, session), services


async def stop_world(world: World, services: list) -> None:
    await world.session.close()
    for service in reversed(services):
        await service.stop()
    await world.rt.bus.stop()
    await world.rt.blobs.close()
    await world.rt.store.close()


@pytest.fixture
async def world(tmp_path) -> AsyncIterator[World]:
    w, services = await start_world(tmp_path)
    try:
        yield w
    finally:
        await stop_world(w, services)
