"""Consultation tests reuse the api fixture (real HTTP, SQLite, tokens) and drive the clock."""

from __future__ import annotations

from typing import Any

import pytest

from services.workflow.leases import WorkflowSettings, parse_iso
from services.workflow.context import SETTINGS_KEY
from tests.api.conftest import api  # noqa: F401 - the fixture

from ..support import ManualClock

T0 = parse_iso("2030-01-01T00:00:00Z")
CG_CT, CG_DX = "1.2.826.0.1.100.1", "1.2.826.0.1.100.2"  # chengguan-thc, patient CG001 (Zhang^San)
DB_CT = "1.2.826.0.1.200.1"  # dongba-thc, patient DB001
BASE = "/api/v1/consultations"


@pytest.fixture
def clock(api) -> ManualClock:  # noqa: F811
    clock = ManualClock(T0)
    api.rt.shared[SETTINGS_KEY] = WorkflowSettings(clock=clock)
    return clock


def request_body(**kw: Any) -> dict[str, Any]:
    return {"chief_complaint": "反复胸闷三月，加重一周", "history": "高血压十年", "current_treatment": "氨氯地平 5mg qd",
            "question": "冠心病可能性？是否需要上转行冠脉造影？", "urgency": "urgent", **kw}


def slot(day: int, hour: int, minutes: int = 60) -> dict[str, str]:
    start = f"2030-01-{day:02d}T{hour:02d}:00:00Z"
    end_min = hour * 60 + minutes
    return {"start": start, "end": f"2030-01-{day:02d}T{end_min // 60:02d}:{end_min % 60:02d}:00Z"}


async def events(api, type_: str, consultation_id: str | None = None) -> list[dict[str, Any]]:  # noqa: F811
    found = [e.event for e in await api.rt.store.read_log(0, limit=100000, types=[type_])]
    return [e.data for e in found if consultation_id is None or e.subject == consultation_id]


async def triaged(api, user: str = "cg-clinic", **kw: Any) -> dict[str, Any]:  # noqa: F811
    doc = await api.ok("POST", BASE, user, request_body(**kw), status=201)
    coordinator = {"county-imaging": "coord-county", "county-ecg": "coord-ecg"}[doc["centre"]]
    return await api.ok("POST", f"{BASE}/{doc['id']}/triage", coordinator, {"note": "接收"})
