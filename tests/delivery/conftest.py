"""A whole Yilian in the test's process (gateway, workflow, api, delivery over one SQLite store and
the embedded bus) and the clinic's side: DCMTK storescp as its terminal, a webhook receiver.

The example consortium is copied with chengguan-thc's ``scp`` and ``webhook`` pointed at the
test's own peers on free loopback ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.api.service import ApiService
from services.core.auth import issue_token
from services.core.runtime import Runtime, build_runtime
from services.core.settings import Settings
from services.delivery import DeliveryService
from services.delivery.settings import DeliverySettings
from services.pacs_gateway import GatewayService
from services.workflow import WorkflowService
from services.workflow.leases import WorkflowSettings

from ..dicom_samples import make_study, storescu
from ..support import EXAMPLE_CONSORTIUM, free_port, wait_for

SECRET = "test-secret-" + "x" * 32
WEBHOOK_SECRET = "whsec-" + "k" * 32
WEBHOOK_ENV = "YILIAN_WEBHOOK_SECRET_CHENGGUAN"
CLINIC_AE = "CG_TERM"
STORESCP = "/usr/bin/storescp"

FAST = dict(first_delay=0.2, max_delay=1.0, horizon=60.0, lease_seconds=2.0, poll_seconds=0.1,
            dicom_timeout=2.0, webhook_timeout=2.0, critical_ack_seconds=600.0, critical_repeat_seconds=600.0,
            pdf_processes=0)  # in-process tests render in a thread; the crash test runs the default pool


def consortium_file(directory: Path, *, scp_port: int | None, webhook_port: int | None,
                    via_edge: bool = False) -> Path:
    """``scp_port`` None: chengguan-thc has no DICOM terminal (inbox, webhook and the API only);
    ``via_edge``: its terminal is behind its edge (docs/edge.md)."""
    text = EXAMPLE_CONSORTIUM.read_text("utf-8")
    old_scp = "scp: {ae_title: CG_TERM, host: 127.0.0.1, port: 11221}"
    # the example has chengguan-thc's webhook commented out (nothing receives it out of the box)
    old_hook = '# webhook: {url: "http://127.0.0.1:18021/yilian/results", secret_env: YILIAN_WEBHOOK_SECRET_CHENGGUAN}'
    assert old_scp in text and old_hook in text, "example consortium changed: update tests/delivery/conftest.py"
    text = text.replace(old_scp, "" if scp_port is None else
                        f"scp: {{ae_title: CG_TERM, host: 127.0.0.1, port: {scp_port}"
                        f"{', via_edge: true' if via_edge else ''}}}")
    new_hook = "" if webhook_port is None else \
        f'webhook: {{url: "http://127.0.0.1:{webhook_port}/yilian/results", secret_env: {WEBHOOK_ENV}}}'
    text = text.replace(old_hook, new_hook)
    path = directory / "consortium.yaml"
    path.write_text(text, "utf-8")
    return path


class StoreSCP:
    """DCMTK storescp playing the clinic's terminal; can be stopped and started again on its port."""

    def __init__(self, directory: Path, port: int, ae_title: str = CLINIC_AE, *, unique: bool = False) -> None:
        self.directory, self.port, self.ae_title = directory, port, ae_title
        self.unique = unique  # a file per C-STORE received, so a resent instance counts twice
        self.proc: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.proc = subprocess.Popen([STORESCP, "-aet", self.ae_title, *(["+uf"] if self.unique else []),
                                      "-od", str(self.directory), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())


@dataclass
class Webhook:
    """An aiohttp receiver on loopback that records every request and answers from ``answers``."""

    port: int
    answers: list[int] = field(default_factory=list)  # statuses to answer in order; then 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    hold: asyncio.Event | None = None  # when set, requests wait for it before answering
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/yilian/results", self._receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if self.hold is not None:
            await self.hold.wait()
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text="ok" if status < 300 else "try later")

    def applied(self) -> list[dict[str, Any]]:
        """What an idempotent receiver applies: one per Idempotency-Key, only with a valid signature."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.requests:
            expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), r["body"], hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, r["headers"].get("X-Yilian-Signature", "")):
                seen.setdefault(r["headers"]["Idempotency-Key"], json.loads(r["body"]))
        return list(seen.values())


@dataclass
class Yilian:
    rt: Runtime
    api: ApiService
    gateway: GatewayService
    delivery: DeliveryService
    session: aiohttp.ClientSession
    tmp: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    def token(self, user: str) -> str:
        return issue_token(self.rt.consortium, user, SECRET)

    async def call(self, method: str, path: str, user: str, json_body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, json=json_body,
                                        headers={"Authorization": f"Bearer {self.token(user)}"}) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text and resp.content_type.endswith("json") else text)

    async def ok(self, method: str, path: str, user: str, json_body: Any = None, status: int = 200) -> Any:
        got, body = await self.call(method, path, user, json_body)
        assert got == status, (method, path, got, body)
        return body

    async def send_study(self, *, calling: str = "CG_CT1", **kw: Any) -> str:
        """A township modality C-STOREs a small study with DCMTK; returns its UID once received."""
        study = make_study(self.tmp / "modality", series=2, instances=2, **kw)
        result = await asyncio.to_thread(storescu, self.gateway.dicom_port, study.files, calling=calling,
                                         called=self.rt.settings.ae_title)
        assert result.returncode == 0, result.output

        async def received() -> bool:
            doc = await self.rt.store.get("studies", study.study_uid)
            return doc is not None and doc.get("state") == "received"
        await wait_for(received, timeout=20, what="study.received")
        return study.study_uid

    async def sign(self, study_uid: str, *, clinic: str = "cg-clinic", reader: str = "dr-wang",
                   findings: str = "右下肺见斑片状高密度影，边缘模糊。", impression: str = "右下肺炎，建议抗感染治疗后复查。",
                   critical: bool = False, category: str | None = None) -> dict[str, Any]:
        request = await self.ok("POST", "/api/v1/reading-requests", clinic, {
            "study_uid": study_uid, "kind": "imaging", "priority": "urgent", "clinical_question": "发热咳嗽三天"},
            status=201)
        await self.ok("POST", f"/api/v1/reading-requests/{request['id']}/claim", reader, {})
        body: dict[str, Any] = {"findings": findings, "impression": impression}
        if critical:
            body.update(critical=True, critical_category=category)
        return await self.ok("POST", f"/api/v1/reading-requests/{request['id']}/sign", reader, body)

    async def deliveries(self, report_id: str) -> dict[str, dict[str, Any]]:
        return {d["channel"]: d for d in await self.rt.store.find("deliveries", {"result_id": report_id})}

    async def delivered(self, result_id: str, channel: str = "dicom", timeout: float = 60) -> None:
        """Wait until ``channel`` delivered ``result_id`` (for DICOM: the SCP answered, so its files
        are complete on disk — a file appears while it is still being written)."""
        async def done() -> bool:
            d = (await self.deliveries(result_id)).get(channel)
            return d is not None and d["state"] == "delivered"
        await wait_for(done, timeout=timeout, what=f"{channel} delivery of {result_id}")

    async def events(self, type_: str) -> list[dict[str, Any]]:
        return [le.event.to_dict() for le in await self.rt.store.read_log(0, limit=100_000, types=[type_])]


@pytest.fixture
def clinic_scp(tmp_path: Path) -> StoreSCP:
    scp = StoreSCP(tmp_path / "clinic-terminal", free_port())
    yield scp
    scp.stop()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[Webhook]:
    hook = Webhook(free_port())
    await hook.start()
    yield hook
    await hook.stop()


@pytest.fixture
async def make_yilian(tmp_path: Path, tmp_path_factory, monkeypatch) -> AsyncIterator[Callable[..., Any]]:
    font_cache = str(tmp_path_factory.getbasetemp() / "font-cache")  # built once per test session
    monkeypatch.setenv(WEBHOOK_ENV, WEBHOOK_SECRET)
    started: list[tuple[Runtime, list[Any], aiohttp.ClientSession]] = []

    async def make(*, scp_port: int | None, webhook_port: int | None = None, via_edge: bool = False,
                   **delivery: Any) -> Yilian:
        data_dir = tmp_path / "yilian"
        data_dir.mkdir(exist_ok=True)
        settings = Settings(
            data_dir=data_dir, consortium_path=consortium_file(data_dir, scp_port=scp_port, webhook_port=webhook_port,
                                                            via_edge=via_edge),
            store_url=f"sqlite:///{data_dir / 'yilian.db'}", bus_url="embedded:",
            blob_url=f"file://{data_dir / 'blobs'}", bind_host="127.0.0.1", http_port=free_port(),
            dicom_port=free_port(), ae_title="YILIAN", jwt_secret=SECRET, study_quiet_seconds=0.5)
        rt = await build_runtime(settings)
        gateway = GatewayService(rt)
        workflow = WorkflowService(rt, WorkflowSettings.from_env())
        api = ApiService(rt)
        service = DeliveryService(rt, DeliverySettings.from_env(**{**FAST, "font_cache": font_cache, **delivery}))
        services = [gateway, workflow, api, service]
        for s in services:
            await s.start()
        await rt.bus.start()
        session = aiohttp.ClientSession()
        started.append((rt, services, session))
        return Yilian(rt, api, gateway, service, session, tmp_path)

    yield make
    for rt, services, session in reversed(started):
        await session.close()
        with contextlib.suppress(Exception):
            await rt.bus.stop()
        for s in reversed(services):
            with contextlib.suppress(Exception):
                await s.stop()
        await rt.blobs.close()
        await rt.store.close()
