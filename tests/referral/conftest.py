"""Referral tests reuse the api fixture (real HTTP, SQLite, tokens) and drive the clock."""

from __future__ import annotations

from typing import Any

import pytest

from services.workflow.context import SETTINGS_KEY
from services.workflow.leases import WorkflowSettings, parse_iso
from tests.api.conftest import api  # noqa: F401 - the fixture

from ..support import ManualClock

T0 = parse_iso("2030-01-01T00:00:00Z")
CG_CT, CG_DX = "1.2.826.0.1.100.1", "1.2.826.0.1.100.2"  # chengguan-thc, patient CG001 (Zhang^San)
DB_CT = "1.2.826.0.1.200.1"  # dongba-thc, patient DB001
BASE = "/api/v1/referrals"
SLOTS = "/api/v1/referral-slots"


@pytest.fixture
def clock(api) -> ManualClock:  # noqa: F811
    clock = ManualClock(T0)
    api.rt.shared[SETTINGS_KEY] = WorkflowSettings(clock=clock)
    return clock


async def events(api, type_: str, subject: str | None = None) -> list[dict[str, Any]]:  # noqa: F811
    found = [e.event for e in await api.rt.store.read_log(0, limit=100000, types=[type_])]
    return [e.data for e in found if subject is None or e.subject == subject]


async def signed_report(api, uid: str = CG_CT, impression: str = "左心室增大，冠脉钙化，建议心内科进一步诊治") -> dict:  # noqa: F811
    rr = await api.create_request(uid)
    await api.ok("POST", f"/api/v1/reading-requests/{rr['id']}/claim", "dr-wang")
    done = await api.ok("POST", f"/api/v1/reading-requests/{rr['id']}/sign", "dr-wang",
                        {"findings": "心影增大，冠状动脉走行区见钙化。", "impression": impression})
    return done


def local_slots(day: int, *hours: str) -> list[dict[str, str]]:
    """30-minute slots on 2030-01-<day> at the given local (+08:00) times."""
    out = []
    for hm in hours:
        h, m = map(int, hm.split(":"))
        end = h * 60 + m + 30
        out.append({"start": f"2030-01-{day:02d}T{h:02d}:{m:02d}:00+08:00",
                    "end": f"2030-01-{day:02d}T{end // 60:02d}:{end % 60:02d}:00+08:00"})
    return out


def up_body(**kw: Any) -> dict[str, Any]:
    return {"target_organization": "county-hospital", "department": "心内科", "reason": "胸闷胸痛反复发作，心电图 ST 段压低",
            "urgency": "urgent", "study_uids": [CG_CT], **kw}
