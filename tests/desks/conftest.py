"""An api on a free loopback port over real SQLite, with the sessions' wall clock in the test's hand."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from services.api.service import ApiService
from services.core.auth import issue_token
from services.core.runtime import Runtime, build_runtime
from services.core.settings import Settings
from tests.support import EXAMPLE_CONSORTIUM, ManualClock, free_port

from .support import set_password

SECRET = "desk-test-secret-" + "d" * 32


@dataclass
class Desk:
    rt: Runtime
    service: ApiService
    clock: ManualClock
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    def token(self, user: str) -> str:
        return issue_token(self.rt.consortium, user, SECRET)

    async def call(self, method: str, path: str, *, headers: dict[str, str] | None = None, json: Any = None,
                   allow_redirects: bool = False) -> tuple[int, Any, Any]:
        """(status, parsed body, headers); no cookie jar: a test sends exactly the cookie it means to."""
        async with self.http.request(method, self.base + path, headers=headers or {}, json=json,
                                     allow_redirects=allow_redirects) as resp:
            text = await resp.text()
            body: Any = text
            if resp.content_type.endswith("json") and text:
                body = await resp.json(content_type=None)
            return resp.status, body, resp.headers


async def start_desk(tmp_path, **overrides: Any) -> Desk:
    settings = dataclasses.replace(
        Settings.from_env(consortium=str(EXAMPLE_CONSORTIUM)), data_dir=tmp_path,
        store_url=f"sqlite:///{tmp_path / 'yilian.db'}?synchronous=NORMAL", bus_url="embedded:",
        blob_url=f"file://{tmp_path / 'blobs'}", bind_host="127.0.0.1", http_port=free_port(), jwt_secret=SECRET)
    settings = dataclasses.replace(settings, **overrides)
    rt = await build_runtime(settings)
    clock = ManualClock(time.time())
    service = ApiService(rt, clock=clock)
    await service.start()
    rt.services.append(service)
    return Desk(rt, service, clock, aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()))


async def stop_desk(desk: Desk) -> None:
    await desk.http.close()
    await desk.service.stop()
    await desk.rt.blobs.close()
    await desk.rt.store.close()


@pytest.fixture
async def desk(tmp_path, monkeypatch) -> AsyncIterator[Desk]:
    """The example consortium; admin, cg-clinic and dr-wang have the default test password."""
    monkeypatch.delenv("YILIAN_TRUSTED_PROXIES", raising=False)
    d = await start_desk(tmp_path)
    try:
        for user in ("admin", "cg-clinic", "dr-wang"):
            await set_password(d.rt, user)
        yield d
    finally:
        await stop_desk(d)
