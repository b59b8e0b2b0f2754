"""Tables of the figures and statements for the health commission: CSV (UTF-8 with BOM, so
Excel opens Chinese correctly) and XLSX (openpyxl, one sheet per table).  No I/O but bytes."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from ..core.fees import yuan

Doc = dict[str, Any]
Table = tuple[str, list[tuple[str, str]], list[Doc]]  # sheet name, (key, 中文 header), rows

SITE = [("organization", "机构 site"), ("name", "名称 name"), ("level", "级别 level")]
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "readings": [*SITE, ("imaging", "远程影像 imaging"), ("ecg", "远程心电 ECG"), ("readings", "远程诊断合计 readings"),
                 ("consultations", "远程会诊 consultations")],
    "turnaround": [("centre", "中心 centre"), ("priority", "优先级 priority"), ("count", "报告数 signed"),
                   ("p50_seconds", "P50 秒 p50 s"), ("p90_seconds", "P90 秒 p90 s"), ("on_time", "按时 on time"),
                   ("on_time_share", "按时率 on-time share")],
    "critical": [("centre", "中心 centre"), ("count", "危急值 critical"), ("acknowledged", "已确认 acknowledged"),
                 ("unacknowledged", "未确认 unacknowledged"), ("p50_ack_seconds", "确认P50 秒 ack p50 s"),
                 ("p90_ack_seconds", "确认P90 秒 ack p90 s")],
    "quality": [("organization", "机构 site"), ("modality", "设备类型 modality"), ("technician", "技师 technician"),
                ("graded", "评级数 graded"), ("A", "甲 A"), ("B", "乙 B"), ("C", "丙 C"), ("reject", "废片 reject"),
                ("a_rate", "甲片率 A rate"), ("reject_rate", "废片率 reject rate")],
    "peer_review": [("reader", "原报告医师 reader"), ("centre", "中心 centre"), ("sampled", "抽查 sampled"),
                    ("scored", "已评 scored"), ("agree", "一致 agree"), ("minor", "轻微差异 minor"),
                    ("significant", "重大差异 significant"), ("clinically_significant", "有临床意义 clinically significant"),
                    ("upheld", "仲裁成立 upheld"), ("agreement_rate", "一致率 agreement rate")],
    "coverage": [("level", "级别 level"), ("total", "机构数 total"), ("served", "已使用 served"),
                 ("share", "覆盖率 share")],
}
STATEMENT = [("requesting", "申请机构 requesting"), ("requesting_name", "申请机构名称"), ("reading", "诊断机构 reading"),
             ("reading_name", "诊断机构名称"), ("entries", "条目 entries"), ("charges", "收费 charges"),
             ("addenda", "补充报告 addenda"), ("voids", "冲销 voids"), ("late", "跨月更正 late"),
             ("fee", "费用(元) fee"), ("reading_amount", "诊断机构所得(元) to reading"),
             ("requesting_amount", "申请机构所得(元) to requesting")]
LEDGER = [("id", "条目 entry"), ("type", "类型 type"), ("service", "服务 service"), ("modality", "设备类型 modality"),
          ("report_id", "报告 report"), ("consultation_id", "会诊 consultation"), ("requesting", "申请机构 requesting"),
          ("reading", "诊断机构 reading"), ("released_at", "发布时间 released (UTC)"), ("month", "所属月份 month"),
          ("posted_month", "记账月份 posted"), ("fee", "费用(元) fee"), ("reading_amount", "诊断机构所得(元)"),
          ("requesting_amount", "申请机构所得(元)")]


def figure_tables(figures: Doc) -> list[Table]:
    tables: list[Table] = []
    for section in ("readings", "turnaround", "quality", "peer_review"):
        if section in figures:
            tables.append((section, COLUMNS[section], figures[section]))
    if "turnaround" in figures:
        tables[[t[0] for t in tables].index("turnaround")] = ("turnaround", COLUMNS["turnaround"], [
            {"centre": "全部 all", **t} for t in figures["turnaround"]] + [
            {"centre": c["centre"], **t} for c in figures.get("centres", []) for t in c["turnaround"]])
    if "critical" in figures:
        tables.append(("critical", COLUMNS["critical"], [{"centre": "全部 all", **figures["critical"]}] + [
            {"centre": c["centre"], **c["critical"]} for c in figures.get("centres", [])]))
    if "coverage" in figures:
        tables.append(("coverage", COLUMNS["coverage"], [{"level": level, **v} for level, v in
                                                          figures["coverage"].items()]))
    return tables


def money(rows: Sequence[Doc]) -> list[Doc]:
    return [{**r, "fee": yuan(r["fee_fen"]), "reading_amount": yuan(r["reading_fen"]),
             "requesting_amount": yuan(r["requesting_fen"])} for r in rows]


def statement_tables(statement: Doc, ledger: Sequence[Doc]) -> list[Table]:
    return [("statement", STATEMENT, money(statement["lines"])), ("ledger", LEDGER, money(ledger))]


def to_csv(table: Table) -> bytes:
    _, columns, rows = table
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([label for _, label in columns])
    for row in rows:
        writer.writerow(["" if row.get(k) is None else row.get(k) for k, _ in columns])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(tables: Sequence[Table], title: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    book = Workbook()
    book.remove(book.active)
    for name, columns, rows in tables:
        sheet = book.create_sheet(name[:31])
        sheet.append([label for _, label in columns])
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows:
            sheet.append([row.get(k) if isinstance(row.get(k), (int, float, str)) or row.get(k) is None
                          else str(row.get(k)) for k, _ in columns])
        sheet.freeze_panes = "A2"
    book.properties.title = title
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
