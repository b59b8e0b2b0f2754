"""A real gateway per test: pynetdicom AE on a free loopback port, SQLite and file blobs in tmp_path.

``gateway`` is the default node; ``make_gateway(**settings)`` builds one with other settings
(quiet period, duplicate policy, limits, TLS, workers, extra AE titles).  The test's event
loop is the gateway's loop: run DCMTK through ``asyncio.to_thread`` (or the ``run``
helper), never synchronously, or the gateway cannot answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.core.runtime import Runtime, build_runtime
from services.core.settings import Settings
from services.pacs_gateway import GatewayService

from ..support import EXAMPLE_CONSORTIUM, free_port

AE_TITLE = "YILIAN"
# Calling AE titles registered in deploy/consortium.example.yaml, by organisation.
CHENGGUAN_CT = "CG_CT1"  # chengguan-thc (township)
CHENGGUAN_ECG = "CG_ECG1"
DONGBA_DR = "DB_DR1"  # dongba-thc (township)
COUNTY_RWS = "COUNTY_RWS1"  # county-hospital reading workstation


def consortium_file(directory: Path, *, extra_township_aes: tuple[str, ...] = ()) -> Path:
    """The example consortium, with ``extra_township_aes`` added to chengguan-thc's modalities."""
    text = EXAMPLE_CONSORTIUM.read_text("utf-8")
    if extra_township_aes:
        old = "modality_aes: [CG_DR1, CG_US1, CG_CT1, CG_ECG1]"
        assert old in text, "example consortium changed: update tests/gateway/conftest.py"
        text = text.replace(old, f"modality_aes: [CG_DR1, CG_US1, CG_CT1, CG_ECG1, {', '.join(extra_township_aes)}]")
    path = directory / "consortium.yaml"
    path.write_text(text, "utf-8")
    return path


@dataclass
class Gateway:
    service: GatewayService
    rt: Runtime
    port: int
    ae_title: str
    data_dir: Path

    async def events(self, type_: str) -> list[dict[str, Any]]:
        await self.service.ingest.settled()  # what was acknowledged is indexed (milliseconds later)
        return [e.event.to_dict() for e in await self.rt.store.read_log(0, limit=100000, types=[type_])]

    async def count(self, collection: str, where: dict | None = None) -> int:
        await self.service.ingest.settled()
        return await self.rt.store.count(collection, where)

    def blob_files(self) -> list[Path]:
        root = self.data_dir / "blobs"
        return [p for p in root.rglob("*.dcm") if ".staging" not in p.parts]

    def staging_files(self) -> list[Path]:
        return list((self.data_dir / "blobs" / ".staging").iterdir())


def gateway_settings(data_dir: Path, consortium: Path, **overrides: Any) -> Settings:
    base = Settings(data_dir=data_dir, consortium_path=consortium, store_url=f"sqlite:///{data_dir / 'yilian.db'}",
                    bus_url="embedded:", blob_url=f"file://{data_dir / 'blobs'}", bind_host="127.0.0.1",
                    http_port=free_port(), dicom_port=free_port(), ae_title=AE_TITLE, study_quiet_seconds=30.0,
                    log_level="INFO", gateway_journal_segment_bytes=1 << 20)  # small: tests roll segments
    return dataclasses.replace(base, **overrides)


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Gateway] = []

    async def make(*, extra_township_aes: tuple[str, ...] = (), name: str = "yilian", **overrides: Any) -> Gateway:
        data_dir = tmp_path / name
        data_dir.mkdir(parents=True, exist_ok=True)
        settings = gateway_settings(data_dir, consortium_file(data_dir, extra_township_aes=extra_township_aes),
                                    **overrides)
        rt = await build_runtime(settings)
        service = GatewayService(rt)
        await service.start()
        gw = Gateway(service, rt, service.dicom_port or 0, settings.ae_title, data_dir)
        started.append(gw)
        return gw

    yield make
    for gw in reversed(started):
        with contextlib.suppress(Exception):
            await gw.service.stop()
        await gw.rt.blobs.close()
        await gw.rt.store.close()


@pytest.fixture
async def gateway(make_gateway: Callable[..., Any]) -> Gateway:
    return await make_gateway()


async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking DCMTK helper off the event loop (the gateway needs the loop meanwhile)."""
    return await asyncio.to_thread(fn, *args, **kwargs)
