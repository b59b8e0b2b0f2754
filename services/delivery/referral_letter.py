"""The referral letter (转诊单) as a PDF in the report document's style (``pdf.py``): the
consortium and the title by direction, the referring and receiving organisations, the patient,
the reason, the studies and reports that go with it, the booked slot or bed, a down-referral's
diagnosis, treatment summary and continuation plan, the family doctor, and the trace (every step
with its local time).  Pure computation, like the report document.
"""

from __future__ import annotations

from typing import Any

from fpdf.enums import WrapMode

from ..core.localtime import LocalTime, dicom_date_for_people
from .pdf import GREY, PAGES, RED, Layout, _Document, _header, _rule, _section, patient_name

Doc = dict[str, Any]

TITLES = {"up": "双向转诊单（上转）", "down": "双向转诊单（下转）"}
STATES = {"requested": "待接收", "accepted": "已接收", "arrived": "已到院", "completed": "已完成",
          "refused": "已拒绝", "cancelled": "已取消", "no_show": "未到院"}
ACTIONS = {"request": "发起转诊", "book": "预约号源", "accept": "接收", "refuse": "拒绝", "cancel": "取消",
           "arrive": "患者到院", "complete": "就诊结束", "confirm_follow_up": "确认首次随访", "escalate": "超时上报协调员",
           "flag_no_show": "患者未到", "refer_down": "下转"}
URGENCY = {"emergency": "急诊", "urgent": "紧急", "routine": "普通"}
SLOT_KINDS = {"outpatient": "门诊号", "bed": "床位"}


def texts(referral: Doc, names: dict[str, str]) -> list[str]:
    """What the letter prints, for the font's character check (``Fonts.for_text``)."""
    plan = referral.get("plan") or {}
    out = [str(referral.get(k) or "") for k in ("reason", "patient_name", "target_department", "family_doctor",
                                                "diagnosis", "treatment_summary", "green_channel")]
    out += list(names.values()) + [plan.get("rehabilitation") or ""]
    out += [str(v) for m in plan.get("medicines", []) for v in m.values()]
    out += [f["what"] for f in plan.get("follow_ups", [])]
    return out


def render(referral: Doc, *, names: dict[str, str], consortium: str, studies: list[Doc], reports: list[Doc],
           font: str, local: LocalTime | None = None, page: str = "A4") -> bytes:
    """``names``: organisation id -> name; ``studies`` / ``reports``: what goes with the patient."""
    local = local or LocalTime.named()
    pdf = _Document(format=PAGES[page])
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=14)
    title = TITLES[referral["direction"]]
    pdf.set_title(title)
    pdf.set_creator("Yilian")
    pdf.set_subject(f"referral={referral['id']}")
    pdf.add_font("cjk", fname=font)
    pdf.add_page()
    origin = names.get(referral["organization"], referral["organization"])
    target = names.get(referral["target_organization"], referral["target_organization"])
    _header(pdf, Layout(page=page), centre=consortium, heading=title, institution=origin, small=False)
    width = pdf.w - pdf.l_margin - pdf.r_margin
    if referral.get("green_channel"):
        pdf.set_text_color(*RED)
        pdf.set_font("cjk", size=12)
        pdf.multi_cell(width, 7, f"绿色通道：{referral['green_channel']} —— 优先接诊", new_x="LMARGIN",
                       new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
    slot = referral.get("slot") or {}
    pairs = [("转诊编号", referral["id"]), ("状态", STATES.get(referral["state"], referral["state"])),
             ("患者姓名", patient_name(referral.get("patient_name"))), ("患者ID", referral.get("patient_id") or ""),
             ("转出单位", origin + (f" {referral['origin_department']}" if referral.get("origin_department") else "")),
             ("转入单位", target + (f" {referral['target_department']}" if referral.get("target_department") else "")),
             ("紧急程度", URGENCY.get(referral.get("urgency"), referral.get("urgency") or "")),
             ("申请时间", local.for_people(referral["requested_at"])),
             ("家庭医生", referral.get("family_doctor") or "—")]
    if slot:
        pairs.append(("预约", f"{SLOT_KINDS.get(slot.get('kind'), '')} {local.for_people(slot['start'])}"
                              f"–{local.local(slot['end']).strftime('%H:%M')}"))
    pdf.set_font("cjk", size=10)
    for i in range(0, len(pairs), 2):
        for label, value in pairs[i:i + 2]:
            pdf.set_text_color(*GREY)
            pdf.cell(22, 6, f"{label}：")
            pdf.set_text_color(0, 0, 0)
            pdf.cell(width / 2 - 22, 6, str(value)[:40])
        pdf.ln(6)
    pdf.ln(1)
    _rule(pdf, 0.3)
    if referral["direction"] == "up":
        _section(pdf, "转诊原因 (reason)", referral.get("reason") or "")
    else:
        _section(pdf, "出院诊断 (diagnosis)", referral.get("diagnosis") or "")
        _section(pdf, "治疗经过 (treatment summary)", referral.get("treatment_summary") or "")
        _section(pdf, "后续治疗方案 (continuation plan)", _plan(referral.get("plan") or {}))
    lines = []
    for s in studies:
        lines.append(f"{dicom_date_for_people(s.get('study_date'))}  {'/'.join(s.get('modalities') or [])}  "
                     f"{s.get('study_description') or ''}  {s['id']}")
    for r in reports:
        lines.append(f"报告 {r['id']}（{r.get('reader_name') or ''}，{local.for_people(r['signed_at'])}）："
                     f"{r.get('impression') or ''}")
    _section(pdf, "随附检查与报告 (studies and reports)", "\n".join(lines) or "—")
    trace = "\n".join(f"{local.for_people(h['at'])}  {ACTIONS.get(h['action'], h['action'])}  "
                      f"→ {STATES.get(h['state'], h['state'])}  ({h['by']})" for h in referral.get("history") or [])
    _section(pdf, "转诊轨迹 (trace)", trace)
    pdf.ln(2)
    pdf.set_font("cjk", size=8)
    pdf.set_text_color(*GREY)
    now = referral.get("updated_at") or referral["requested_at"]
    offset = local.local(now).strftime("%z")
    pdf.multi_cell(width, 4.3, f"打印时间：{local.for_people(now)}（UTC{offset[:3]}:{offset[3:]}）  "
                               "时间均为本地时间。", new_x="LMARGIN", new_y="NEXT", wrapmode=WrapMode.CHAR)
    pdf.set_text_color(0, 0, 0)
    return bytes(pdf.output())


def _plan(plan: Doc) -> str:
    lines = []
    for m in plan.get("medicines") or []:
        lines.append("用药：" + " ".join(str(m.get(k)) for k in ("name", "dose", "frequency", "duration") if m.get(k)))
    for f in plan.get("follow_ups") or []:
        lines.append(f"随访：{f['date']} {f['what']}")
    if plan.get("rehabilitation"):
        lines.append(f"康复：{plan['rehabilitation']}")
    return "\n".join(lines) or "—"
