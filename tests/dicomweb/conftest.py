"""An api service (with DICOMweb) on a free loopback port, optionally with the PACS gateway on the
same runtime, and ``dicomweb-client`` sessions per user carrying real bearer tokens.

dicomweb-client is synchronous (requests): call it through ``web.run`` (a thread), since
the server runs on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dicomweb_client.api import DICOMwebClient

from services.api.service import ApiService
from services.core.auth import issue_token
from services.core.runtime import Runtime, build_runtime
from services.core.settings import Settings
from services.pacs_gateway import GatewayService
from tests.support import EXAMPLE_CONSORTIUM, free_port

SECRET = "test-secret-" + "d" * 32
VIEWER_ORIGIN = "https://viewer.example.org"


class Web:
    def __init__(self, rt: Runtime, service: ApiService, session: aiohttp.ClientSession,
                 gateway: GatewayService | None) -> None:
        self.rt, self.service, self.session, self.gateway = rt, service, session, gateway
        self.base = f"http://127.0.0.1:{service.port}"
        self.root = self.base + "/dicomweb"

    def token(self, user: str) -> str:
        return issue_token(self.rt.consortium, user, SECRET)

    def client(self, user: str) -> DICOMwebClient:
        return DICOMwebClient(url=self.root, headers={"Authorization": f"Bearer {self.token(user)}"})

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def get(self, path: str, *, user: str | None = None, headers: dict[str, str] | None = None,
                  params: Any = None) -> tuple[int, bytes, Any]:
        headers = dict(headers or {})
        if user:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        async with self.session.get(self.root + path, headers=headers, params=params) as resp:
            return resp.status, await resp.read(), resp.headers

    async def post(self, path: str, data: bytes, content_type: str, *, user: str | None) -> tuple[int, bytes, Any]:
        headers = {"Content-Type": content_type}
        if user:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        async with self.session.post(self.root + path, data=data, headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers

    async def events(self, type_: str) -> list[dict[str, Any]]:
        return [e.event.to_dict() for e in await self.rt.store.read_log(0, limit=100000, types=[type_])]


async def start_web(tmp_path: Path, *, gateway: bool = False, **overrides: Any) -> Web:
    settings = dataclasses.replace(
        Settings.from_env(consortium=str(EXAMPLE_CONSORTIUM)), data_dir=tmp_path,
        store_url=f"sqlite:///{tmp_path / 'yilian.db'}", bus_url="embedded:", blob_url=f"file://{tmp_path / 'blobs'}",
        bind_host="127.0.0.1", http_port=free_port(), dicom_port=free_port(), ae_title="YILIAN", jwt_secret=SECRET,
        **{"cors_origins": (VIEWER_ORIGIN,), **overrides})
    rt = await build_runtime(settings)
    gw = None
    if gateway:
        gw = GatewayService(rt)
        await gw.start()
    service = ApiService(rt)
    await service.start()
    return Web(rt, service, aiohttp.ClientSession(), gw)


async def stop_web(web: Web) -> None:
    await web.session.close()
    await web.service.stop()
    if web.gateway is not None:
        await web.gateway.stop()
    await web.rt.blobs.close()
    await web.rt.store.close()


@pytest.fixture
async def web(tmp_path, monkeypatch):
    monkeypatch.delenv("YILIAN_TRUSTED_PROXIES", raising=False)
    w = await start_web(tmp_path)
    try:
        yield w
    finally:
        await stop_web(w)


@pytest.fixture
async def web_with_gateway(tmp_path, monkeypatch):
    monkeypatch.delenv("YILIAN_TRUSTED_PROXIES", raising=False)
    w = await start_web(tmp_path, gateway=True)
    try:
        yield w
    finally:
        await stop_web(w)
