"""A centre (api + gateway on one runtime) and a township edge in front of it, through a
fault-injecting proxy; the edge runs in this event loop like ``yilian edge`` runs it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest_asyncio

from services.core.auth import issue_token
from services.core.settings import Settings
from services.edge.service import run_edge
from services.edge.settings import EdgeSettings
from tests.dicomweb.conftest import SECRET, Web, start_web
from tests.support import EXAMPLE_CONSORTIUM, free_port

from .faultproxy import FaultProxy

EDGE_AE = "CG_EDGE"


class Edge:
    def __init__(self, settings: Settings, edge: EdgeSettings) -> None:
        self.settings, self.edge = settings, edge
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.rt: Any = None
        self.service: Any = None
        self.gateway: Any = None
        self.started = asyncio.Event()

    async def start(self) -> None:
        def ready(rt: Any, gateway: Any, service: Any) -> None:
            self.rt, self.gateway, self.service = rt, gateway, service
            self.started.set()
        self.task = asyncio.create_task(run_edge(self.settings, self.edge, ready=ready, stop=self.stop_event))
        waiter = asyncio.create_task(self.started.wait())
        done, _ = await asyncio.wait({waiter, self.task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            self.task.result()  # raises what stopped it
        assert self.started.is_set(), "the edge did not start in 30 s"

    @property
    def dicom_port(self) -> int:
        return self.gateway.dicom_port

    async def stop(self) -> None:
        self.stop_event.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)


def edge_settings(data: Path, **overrides: Any) -> Settings:
    return dataclasses.replace(
        Settings.from_env(consortium=str(EXAMPLE_CONSORTIUM)), data_dir=data,
        store_url=f"sqlite:///{data / 'edge.db'}", bus_url="embedded:", blob_url=f"file://{data / 'blobs'}",
        bind_host="127.0.0.1", http_port=free_port(), dicom_port=free_port(), ae_title=EDGE_AE,
        jwt_secret="edge-has-no-secret-of-the-centre-" + "x" * 8, gateway_indexer="inline", **overrides)


@pytest_asyncio.fixture
async def centre(tmp_path: Path):
    web = await start_web(tmp_path / "centre", gateway=True, study_quiet_seconds=0.3)
    yield web
    await web.session.close()
    await web.service.stop()
    if web.gateway is not None:
        await web.gateway.stop()
    await web.rt.store.close()


@pytest_asyncio.fixture
async def link_to(centre: Web):
    proxies: list[FaultProxy] = []

    async def make(**kw: Any) -> FaultProxy:
        proxy = FaultProxy(centre.service.port, **kw)
        await proxy.start()
        proxies.append(proxy)
        return proxy
    yield make
    for p in proxies:
        await p.stop()


@pytest_asyncio.fixture
async def make_edge(centre: Web, tmp_path: Path):
    edges: list[Edge] = []

    async def make(proxy: FaultProxy, *, data: Path | None = None, user: str = "cg-edge",
                   organization: str = "chengguan-thc", **kw: Any) -> Edge:
        token = issue_token(centre.rt.consortium, user, SECRET)
        settings = edge_settings(data or tmp_path / "edge", study_quiet_seconds=0.3)
        options = {"first_delay": 0.05, "max_delay": 0.5, "poll_seconds": 0.1, "heartbeat_seconds": 0.5,
                   "batch_bytes": 256 * 1024, **kw}
        edge = Edge(settings, EdgeSettings(centre_url=f"http://127.0.0.1:{proxy.port}", token=token,
                                           organization=organization, **options))
        await edge.start()
        edges.append(edge)
        return edge
    yield make
    for e in edges:
        if e.task is not None and not e.task.done():
            await e.stop()
