"""The referral letter (转诊单) over HTTP: up and down, rendered to PNG in test-artifacts/ to be
looked at, and read back with poppler's pdftotext."""

from __future__ import annotations

import subprocess
from pathlib import Path

from services.workflow.leases import parse_iso

from .conftest import BASE, SLOTS, local_slots, signed_report
from .test_flow import PLAN

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PDFTOPPM, PDFTOTEXT = "/usr/bin/pdftoppm", "/usr/bin/pdftotext"


async def letter(api, rid: str, user: str, name: str) -> str:
    async with api.session.get(f"{api.base}{BASE}/{rid}/letter.pdf",
                               headers={"Authorization": f"Bearer {api.token(user)}"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/pdf"
        pdf = await resp.read()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.pdf"
    path.write_bytes(pdf)
    for old in ARTIFACTS.glob(f"{name}-*.png"):
        old.unlink()
    subprocess.run([PDFTOPPM, "-png", "-r", "110", str(path), str(ARTIFACTS / name)], check=True, timeout=60)
    assert sorted(ARTIFACTS.glob(f"{name}-*.png"))
    return subprocess.run([PDFTOTEXT, "-layout", str(path), "-"], check=True, capture_output=True, text=True,
                          timeout=60).stdout


async def test_up_and_down_referral_letters(api, clock):
    report = await signed_report(api)
    slots = await api.ok("POST", SLOTS, "county-cardio", {"department": "心内科", "slots": local_slots(3, "09:00")},
                         status=201)
    up = await api.ok("POST", BASE, "cg-clinic", {"from_report": report["report_id"], "target_organization": "county-hospital",
                                                 "department": "心内科", "urgency": "urgent", "family_doctor": "刘医生"},
                      status=201)
    await api.ok("POST", f"{BASE}/{up['id']}/accept", "county-cardio", {"slot_id": slots["items"][0]["id"]})
    text = await letter(api, up["id"], "county-cardio", "referral-letter-up")
    for expected in ("双向转诊单（上转）", "城关镇卫生院", "示范县人民医院 心内科", "紧急", "刘医生", "2030-01-03 09:00",
                     "左心室增大", report["report_id"], "发起转诊", "(UTC+08:00)".replace("(", "（").replace(")", "）")):
        assert expected in text, expected
    clock.now = parse_iso("2030-01-03T01:10:00Z")
    await api.ok("POST", f"{BASE}/{up['id']}/arrive", "county-cardio")
    down = await api.ok("POST", f"{BASE}/{up['id']}/refer-down", "county-cardio", {
        "diagnosis": "冠状动脉粥样硬化性心脏病，PCI 术后", "treatment_summary": "经桡动脉行 PCI，前降支植入支架 1 枚", "plan": PLAN},
        status=201)
    text = await letter(api, down["id"], "cg-clinic", "referral-letter-down")
    for expected in ("双向转诊单（下转）", "出院诊断", "阿司匹林肠溶片 100mg qd 长期", "随访：2030-01-10 血压心率随访", "心脏康复"):
        assert expected in text, expected
