"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

import pytest

from .support import EXAMPLE_CONSORTIUM
from .tansu import _stop_session_tansu, tansu_broker, tansu_url  # noqa: F401 - fixtures


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
