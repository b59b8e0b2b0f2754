"""Fixtures shared by the whole suite."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading

import pytest
from argon2 import PasswordHasher

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


@pytest.fixture(autouse=True, scope="session")
def _one_font_subset(tmp_path_factory):
    """Every delivery a test starts, in this process or in one it starts, keeps the PDF font's subset
    in one directory of the session (tests/delivery/conftest.py's too): it is built once (~2 s of CPU
    in a process of its own), not at each fresh data directory."""
    from .e2e import process
    cache = tmp_path_factory.getbasetemp() / "font-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YILIAN_DELIVERY_FONT_CACHE", str(cache))  # DeliverySettings.from_env in this process
        patch.setattr(process, "FONT_CACHE", cache)  # YilianProcess (its environment is clean of YILIAN_*)
        yield


@pytest.fixture(autouse=True)
def _cheap_password_hashes(request, monkeypatch):
    """Desk passwords hashed in the test process: argon2id still, but with the least work (1 pass,
    64 KiB) instead of the production profile's 3 passes over 64 MiB (~0.2 s a hash or check on 2
    cores; hundreds of sign-ins made the desk tests minutes long).  Subprocesses (``yilian up``,
    ``yilian user passwd``) keep the production profile; ``@pytest.mark.production_argon2`` keeps it
    in a test, which checks its parameters (tests/desks/test_session_store.py)."""
    if request.node.get_closest_marker("production_argon2"):
        return
    from services.core import passwords
    monkeypatch.setattr(passwords, "_hasher", _CHEAP_HASHER)
    monkeypatch.setattr(passwords, "_DUMMY", _cheap_dummy())


_CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


@functools.cache
def _cheap_dummy() -> str:
    return _CHEAP_HASHER.hash("yilian-no-such-user")


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
