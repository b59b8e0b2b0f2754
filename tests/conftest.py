"""Fixtures shared by the whole suite."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading

import pytest

from .support import EXAMPLE_CONSORTIUM
from .tansu import _stop_session_tansu, tansu_broker, tansu_url  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def _gateways_index_before_storescu_returns(monkeypatch):
    """Every in-process gateway a test starts: storescu (tests/dicom_samples.py) waits until it has
    indexed what it acknowledged, so the test may read the index at once."""
    from services.pacs_gateway import service
    from . import dicom_samples

    started = service.GatewayService.start

    async def start(self):
        await started(self)
        loop, loop_thread = asyncio.get_running_loop(), threading.get_ident()

        def settle() -> None:
            if loop.is_running() and threading.get_ident() != loop_thread and self.ready:
                with contextlib.suppress(Exception):  # a gateway stopped meanwhile has nothing to wait for
                    asyncio.run_coroutine_threadsafe(self.ingest.settled(), loop).result(60)
        dicom_samples.AFTER_STORE.append(settle)
    monkeypatch.setattr(service.GatewayService, "start", start)
    yield
    dicom_samples.AFTER_STORE.clear()


@pytest.fixture
def schemas():
    from services.core.events import registry
    return registry()


@pytest.fixture
def consortium():
    from services.core.consortium import load_consortium
    return load_consortium(EXAMPLE_CONSORTIUM)


def pytest_report_header(config):
    mongo = os.environ.get("YILIAN_TEST_MONGO_URL")
    return [f"MongoDB adapter: mongomock-motor{' + real server at ' + mongo if mongo else ' only (set YILIAN_TEST_MONGO_URL for a real server)'}"]
