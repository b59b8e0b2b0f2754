"""The report as a PDF laid out as a Chinese clinic expects, and as an Encapsulated PDF instance.

For terminals that cannot show an SR, and for the paper copy the patient takes home.  The
layout (docs/reports.md, "The report document"): the reading centre and the title by kind; the
requesting organisation; the patient and the examination; the clinical question; the sections
(the template's titles) with the structured fields as a table; 报告医生 and 审核医生 with their
electronic-signature marks; the report time in the consortium's time zone; a QR code of the
verification URL; the 互认 mark where the consortium has one; "本报告仅供临床参考" on every page.
Rendering is pure computation (fpdf2, segno); the font file is checked when the service starts
(``DeliverySettings.check``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import segno
from fpdf import FPDF
from fpdf.enums import TableBordersLayout, TableCellFillMode
from fpdf.fonts import FontFace
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from ..core.localtime import LocalTime, age_in_years, dicom_date_for_people
from . import linebreak
from .document import base_dataset
from .fonts import SharedFonts
from .signing import Signer
from .sr import TITLES, code

Doc = dict[str, Any]

ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")
SERIES_NUMBER = 9902
HEADINGS = {"imaging": "医学影像诊断报告", "ecg": "心电图诊断报告", "consultation": "远程会诊意见"}
# The two text sections' titles when the report names no template (a template's own titles win).
SECTION_TITLES = {"imaging": ("影像所见", "诊断意见"), "ecg": ("心电图所见", "诊断意见"),
                  "consultation": ("会诊意见", "建议")}
DISCLAIMER = "本报告仅供临床参考"
# What the document takes from the clinic's order (HIS 申请单), when the study came from one.
ORDER_FIELDS = ("requesting_physician", "requesting_department", "body_part", "modality", "procedure_description",
                "clinical_question")
PAGES = {"A4": (210, 297), "A5": (148, 210)}  # millimetres (ISO 216)
GREY, RED, BLUE = (90, 90, 90), (190, 20, 20), (20, 60, 150)


def _group(group: str) -> str:
    """One component group of a DICOM PN, readable: 张^三 -> 张三, Zhang^San -> Zhang San."""
    parts = [p for p in group.split("^") if p]
    if parts and all(ord(ch) > 0x2E7F for ch in "".join(parts)):
        return "".join(parts)
    return " ".join(parts)


def patient_name(value: str | None) -> str:
    """A Chinese report names the patient as a Chinese reader knows him: the ideographic group
    (``Zhang^San=张^三`` -> ``张三（Zhang San）``), the alphabetic one beside it when there is one."""
    groups = [_group(g) for g in (value or "").split("=")]
    alphabetic, ideographic = groups[0], (groups[1] if len(groups) > 1 else "")
    if ideographic and alphabetic and ideographic != alphabetic:
        return f"{ideographic}（{alphabetic}）"
    return ideographic or alphabetic


def birth_date(birth_da: str | None, study_da: str | None) -> str:
    """``19580312`` at a study of ``20261202`` -> ``1958-03-12（68岁）``."""
    text = dicom_date_for_people(birth_da)
    age = age_in_years(birth_da, study_da)
    return f"{text}（{age}岁）" if text and age is not None else text


@dataclass(frozen=True)
class Layout:
    """What the document shows beyond the result and the study (picklable: it goes to the PDF worker)."""

    page: str = "A4"  # or "A5" (consortium or centre setting)
    verification_url: str | None = None  # GET /api/v1/reports/{id}/verification under YILIAN_PUBLIC_URL: the QR code
    recognition_mark: str | None = None  # 互认标识 (consortium setting), e.g. "HR"
    order: Doc = field(default_factory=dict)  # the order's requesting physician / department / procedure, if any
    exam: str | None = None  # the template's exam name (e.g. 胸部CT平扫)
    sections: tuple[str, str] | None = None  # the template's section titles


def texts(result: Doc, layout: Layout | None) -> list[str]:
    """The text the document prints besides the result's and the study's own strings: the font must
    have its characters (``Fonts.for_text``)."""
    out = [str(v) for f in result.get("structured") or [] for v in f.values() if v is not None]
    if layout is not None:
        out += [str(v) for v in layout.order.values()]
        out += [t for t in (layout.exam, layout.recognition_mark, layout.verification_url, *(layout.sections or ()))
                if t]
    return out


def verification_url(public_url: str | None, report_id: str | None) -> str | None:
    """Where anyone holding the paper checks it online; None without a public URL or a report."""
    if not public_url or not report_id:
        return None
    return f"{public_url.rstrip('/')}/api/v1/reports/{report_id}/verification"


class _Document(SharedFonts, FPDF):
    def footer(self) -> None:
        self.set_y(-self.b_margin + 3)
        self.set_draw_color(*GREY)
        self.set_line_width(0.2)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.set_font("cjk", size=8.5)
        self.set_text_color(*GREY)
        self.cell(0, 5, DISCLAIMER, align="L")
        self.set_x(self.l_margin)
        self.cell(0, 5, f"第 {self.page_no()} 页 / 共 {{nb}} 页", align="R")
        self.set_text_color(0, 0, 0)


def sex_for_people(sex: str | None) -> str:
    return {"M": "男", "F": "女", "O": "其他"}.get(sex or "", sex or "")


def age_for_people(birth_da: str | None, study_da: str | None) -> str:
    age = age_in_years(birth_da, study_da)
    return f"{age}岁" if age is not None else ""


def exam_time(study: Doc) -> str:
    """The study's date and time as the modality wrote them (its local time): ``2026-12-02 09:30``."""
    day = dicom_date_for_people(study.get("study_date"))
    tm = (study.get("study_time") or "").strip()
    if day and len(tm) >= 4 and tm[:4].isdigit():
        return f"{day} {tm[:2]}:{tm[2:4]}"
    return day


def exam_description(result: Doc, study: Doc, layout: Layout) -> str:
    """检查部位与方法: body part, modality, and what was done (the order's procedure, the template's
    exam, or the study description)."""
    order = layout.order
    body_part = order.get("body_part") or study.get("body_part") or ""
    modalities = study.get("modalities") or ([order["modality"]] if order.get("modality") else [])
    if isinstance(modalities, str):
        modalities = [modalities]
    modality = "/".join(m for m in modalities if m and m not in ("SR", "DOC", "KO", "PR"))
    method = order.get("procedure_description") or layout.exam or study.get("study_description") or ""
    parts = [p for p in (body_part, modality, method) if p]
    return "  ".join(dict.fromkeys(parts)) or ("十二导联心电图" if result["kind"] == "ecg" else "")


def render(result: Doc, *, study: Doc, institution: str, centre: str, font: str,
           local: LocalTime | None = None, layout: Layout | None = None) -> bytes:
    """``institution``: the requesting organisation; ``centre``: the reading centre that reports."""
    local = local or LocalTime.named()
    layout = layout or Layout()
    pdf = _Document(format=PAGES[layout.page])
    small = layout.page == "A5"
    margin = 10 if small else 15
    pdf.set_margins(margin, margin, margin)
    pdf.set_auto_page_break(True, margin=14)
    heading = HEADINGS.get(result["kind"], "诊断报告")
    pdf.set_title(heading)
    pdf.set_creator("Yilian")
    # Machine-readable: the report version this PDF is, and the SR beside it (docs/reports.md, Signature).
    version = result.get("report_version") or 1
    pdf.set_subject(f"report={result.get('report_id') or result['id']};version={version};"
                    f"sr={result['sr_sop_instance_uid']}")
    pdf.add_font("cjk", fname=font)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    if result["source"] == "addendum":
        heading += "（补充报告）"
    _header(pdf, layout, centre=centre or institution, heading=heading, institution=institution, small=small)
    _patient(pdf, result, study, layout, institution=institution, local=local, small=small)
    if result["critical"]:
        pdf.ln(1)
        pdf.set_text_color(*RED)
        pdf.set_font("cjk", size=12)
        category = result.get("critical_category") or ""
        _flow(pdf, width, 7, f"危急值：{category}  —— 请立即处理并在系统中确认", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
    titles = layout.sections or SECTION_TITLES.get(result["kind"], SECTION_TITLES["imaging"])
    _section(pdf, titles[0], result.get("findings") or "", structured=result.get("structured") or [])
    _section(pdf, titles[1], result.get("impression") or "")
    _signatures(pdf, result, local=local, version=version, layout=layout)
    return bytes(pdf.output())


def _header(pdf: FPDF, layout: Layout, *, centre: str, heading: str, institution: str, small: bool) -> None:
    top, width = pdf.t_margin, pdf.w - pdf.l_margin - pdf.r_margin
    side = 20 if small else 24  # the QR code's edge and the room kept for it on both sides
    bottom = top
    if layout.verification_url:
        _qr(pdf, layout.verification_url, x=pdf.w - pdf.r_margin - side, y=top, size=side)
        pdf.set_xy(pdf.w - pdf.r_margin - side - 4, top + side + 0.5)
        pdf.set_font("cjk", size=7)
        pdf.set_text_color(*GREY)
        pdf.cell(side + 8, 3.5, "扫码验证报告", align="C")
        pdf.set_text_color(0, 0, 0)
        bottom = top + side + 4
    if layout.recognition_mark:
        pdf.set_draw_color(*RED)
        pdf.set_text_color(*RED)
        pdf.set_line_width(0.6)
        mark_w, mark_h = (16, 10) if small else (19, 12)
        pdf.rect(pdf.l_margin, top + 2, mark_w, mark_h, round_corners=True, corner_radius=2)
        pdf.set_xy(pdf.l_margin, top + 2)
        pdf.set_font("cjk", size=14 if small else 17)
        pdf.cell(mark_w, mark_h, layout.recognition_mark, align="C")
        pdf.set_xy(pdf.l_margin - 3, top + 2 + mark_h + 0.5)
        pdf.set_font("cjk", size=7)
        pdf.cell(mark_w + 6, 3.5, "检查结果互认", align="C")
        pdf.set_text_color(0, 0, 0)
        bottom = max(bottom, top + 2 + mark_h + 4)
    inner = width - 2 * (side + 2)
    pdf.set_xy(pdf.l_margin + side + 2, top + 1)
    pdf.set_font("cjk", size=13 if small else 15)
    pdf.multi_cell(inner, 7 if small else 8, centre, align="C", new_x="LEFT", new_y="NEXT")
    pdf.set_font("cjk", size=15 if small else 18)
    pdf.set_char_spacing(1.5 if small else 2.5)
    pdf.multi_cell(inner, 8 if small else 10, heading, align="C", new_x="LEFT", new_y="NEXT")
    pdf.set_char_spacing(0)
    pdf.set_font("cjk", size=8.5 if small else 9.5)
    pdf.set_text_color(*GREY)
    pdf.multi_cell(inner, 5, f"申请单位：{institution}" if institution else "", align="C", new_x="LMARGIN",
                   new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_y(max(pdf.get_y(), bottom) + 1.5)
    _rule(pdf, 0.5)


def _qr(pdf: FPDF, url: str, *, x: float, y: float, size: float) -> None:
    """The QR code as vector squares (sharp on any printer; one rectangle per dark run of a row)."""
    qr = segno.make(url, error="m", micro=False)
    rows = [list(r) for r in qr.matrix]
    module = size / len(rows)
    pdf.set_fill_color(0, 0, 0)
    for j, row in enumerate(rows):
        i = 0
        while i < len(row):
            if row[i]:
                start = i
                while i < len(row) and row[i]:
                    i += 1
                pdf.rect(x + start * module, y + j * module, (i - start) * module, module, style="F")
            else:
                i += 1


def _rule(pdf: FPDF, weight: float) -> None:
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(weight)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(2)


def _patient(pdf: FPDF, result: Doc, study: Doc, layout: Layout, *, institution: str, local: LocalTime,
             small: bool) -> None:
    order = layout.order
    study_da = study.get("study_date") or local.dicom(result["signed_at"]).date
    pairs = [("姓名", patient_name(study.get("patient_name") or result.get("patient_name"))),
             ("性别", sex_for_people(study.get("sex"))),
             ("年龄", age_for_people(study.get("birth_date"), study_da)),
             ("检查号", study.get("accession_number") or result.get("accession_number") or ""),
             ("患者ID", study.get("patient_id") or result.get("patient_id") or ""),
             ("检查时间", exam_time(study))]
    if order.get("requesting_department"):
        pairs.append(("申请科室", order["requesting_department"]))
    if order.get("requesting_physician"):
        pairs.append(("申请医生", _person(order["requesting_physician"])))
    wide = [("检查部位与方法", exam_description(result, study, layout))]
    question = result.get("clinical_question") or order.get("clinical_question")
    if question:
        wide.append(("临床诊断 / 申请目的", question))
    columns = 2 if small else 3
    label_w = 19 if small else 21
    width = pdf.w - pdf.l_margin - pdf.r_margin
    value_w = width / columns - label_w
    pdf.set_font("cjk", size=9 if small else 10)
    with pdf.table(col_widths=(label_w, value_w) * columns, width=width, first_row_as_headings=False,
                   borders_layout=TableBordersLayout.NONE, line_height=5 if small else 5.6,
                   padding=(0.6, 0.5), text_align="LEFT", v_align="TOP") as table:
        for at in range(0, len(pairs), columns):
            row = table.row()
            chunk = pairs[at:at + columns]
            for label, value in chunk:
                row.cell(f"{label}：", style=_label_style())
                row.cell(str(value))
            for _ in range(columns - len(chunk)):
                row.cell("")
                row.cell("")
    label_wide = 36 if small else 38
    for label, value in wide:
        pdf.set_x(pdf.l_margin + 0.5)  # under the table's labels (its cells' padding)
        pdf.set_font("cjk", size=9 if small else 10)
        pdf.set_text_color(*GREY)
        pdf.cell(label_wide, 5.6, f"{label}：")
        pdf.set_text_color(0, 0, 0)
        _flow(pdf, width - label_wide - 0.5, 5.6, str(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    _rule(pdf, 0.3)


def _label_style() -> FontFace:
    return FontFace(color=GREY)


def _person(value: str) -> str:
    """A DICOM PN (``李^明``) or plain text, readable."""
    return patient_name(value) if "^" in value or "=" in value else value


def _section(pdf: FPDF, title: str, body: str, *, structured: list[Doc] = ()) -> None:
    width = pdf.w - pdf.l_margin - pdf.r_margin
    pdf.ln(1.5)
    if pdf.will_page_break(20):
        pdf.add_page()
    pdf.set_fill_color(*BLUE)
    pdf.rect(pdf.l_margin, pdf.get_y() + 1.2, 1.2, 5, style="F")
    pdf.set_x(pdf.l_margin + 3)
    pdf.set_font("cjk", size=12)
    pdf.set_text_color(*BLUE)
    pdf.cell(width - 3, 7.5, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    if structured:
        _fields(pdf, structured)
    pdf.set_font("cjk", size=10.5)
    pdf.set_x(pdf.l_margin + 3)
    # Chinese text breaks between any two characters; by words, "01. 右下肺……" would leave "01." alone on a line.
    _flow(pdf, width - 3, 6.5, body or "—", new_x="LMARGIN", new_y="NEXT")


def _flow(pdf: FPDF, w: float, h: float, text: str, *, new_x: str = "LMARGIN", new_y: str = "NEXT") -> None:
    """Text broken into lines as a Chinese word processor breaks them (禁则处理, :mod:`.linebreak`)
    and set flush to both margins (两端对齐): every line of a paragraph but its last is spread to the
    full width by character spacing; a line short by more than three characters stays as it is."""
    room = w - 2 * pdf.c_margin - 0.01  # a cell's usable width, less rounding
    x = pdf.get_x()
    lines = [(line, i < len(para) - 1) for paragraph in text.split("\n")
             for para in [linebreak.break_lines(paragraph, room, pdf.get_string_width)]
             for i, line in enumerate(para)]
    for n, (line, spread) in enumerate(lines):
        gap = room - pdf.get_string_width(line)
        if spread and len(line) > 1 and 0 < gap <= 3 * pdf.font_size:
            pdf.set_char_spacing(gap / (len(line) - 1) * pdf.k)  # points
        pdf.set_x(x)
        last = n == len(lines) - 1
        pdf.cell(w, h, line, new_x=new_x if last else "LEFT", new_y=new_y if last else "NEXT")
        pdf.set_char_spacing(0)


def _fields(pdf: FPDF, structured: list[Doc]) -> None:
    """The template's structured fields (e.g. an ECG's 心律 / 心率 / 电轴) as a small table."""
    width = pdf.w - pdf.l_margin - pdf.r_margin - 3
    pdf.set_x(pdf.l_margin + 3)
    pdf.set_font("cjk", size=9.5)
    pdf.set_draw_color(150, 150, 150)
    pdf.set_fill_color(255, 255, 255)  # only the heading row is shaded
    pdf.set_line_width(0.2)
    with pdf.table(cell_fill_mode=TableCellFillMode.NONE, col_widths=(3, 4, 2), width=min(width, 120), align="LEFT", line_height=5.6,
                   headings_style=FontFace(color=GREY, fill_color=(236, 240, 248)),
                   borders_layout=TableBordersLayout.HORIZONTAL_LINES, padding=(0.8, 1.5),
                   text_align=("LEFT", "LEFT", "LEFT")) as table:
        table.row(["项目", "结果", "单位"])
        for f in structured:
            table.row([str(f.get("label") or f.get("key") or ""), _value(f.get("value")), str(f.get("unit") or "")])
    pdf.ln(1.5)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _signatures(pdf: FPDF, result: Doc, *, local: LocalTime, version: int, layout: Layout) -> None:
    """报告医生 / 审核医生 (or the one 诊断医师, or the consultation's signers), each with an 电子签名
    mark; the report time; the report's number and where to verify it."""
    width = pdf.w - pdf.l_margin - pdf.r_margin
    block = 40 if layout.verification_url else 36  # its height; it sits at the foot of the page, as on paper
    if pdf.will_page_break(block):
        pdf.add_page()
    pdf.set_y(max(pdf.get_y() + 3, pdf.h - pdf.b_margin - block))
    _rule(pdf, 0.3)
    pdf.set_font("cjk", size=10.5)
    for label, name in signers_for_people(result):
        if pdf.get_x() + pdf.get_string_width(f"{label}：{name}") + 22 > pdf.w - pdf.r_margin:
            pdf.ln(8)
        pdf.cell(pdf.get_string_width(f"{label}：{name}") + 1.5, 7, f"{label}：{name}")
        _seal(pdf)
        pdf.set_x(pdf.get_x() + 8)
    pdf.ln(8)
    when = local.local(result["signed_at"])
    offset = when.strftime("%z")
    pdf.cell(width, 6.5, f"报告时间：{local.for_people(result['signed_at'])}（UTC{offset[:3]}:{offset[3:]}）",
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjk", size=8)
    pdf.set_text_color(*GREY)
    lines = [f"报告编号：{result.get('report_id') or result['id']}    版本：{version}",
             "本报告附诊断医师的电子签名，可用 PDF 阅读器或 yilian verify 验证。"]
    if layout.verification_url:
        lines.append(f"在线验证：{layout.verification_url}")
    lines.append(f"结构化报告（SR）：{result['sr_sop_instance_uid']}")
    for line in lines:
        pdf.multi_cell(width, 4.3, line, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)


def _seal(pdf: FPDF) -> None:
    """The 电子签名 mark beside a signer's name: it says the signature is in the file, not ink."""
    x, y = pdf.get_x(), pdf.get_y()
    size = pdf.font_size_pt
    pdf.set_draw_color(*RED)
    pdf.set_text_color(*RED)
    pdf.set_line_width(0.35)
    pdf.set_font("cjk", size=7.5)
    w = pdf.get_string_width("电子签名") + 3
    pdf.rect(x, y + 1.2, w, 4.6, round_corners=True, corner_radius=1)
    pdf.set_xy(x, y + 1.2)
    pdf.cell(w, 4.6, "电子签名", align="C")
    pdf.set_xy(x + w, y)
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("cjk", size=size)


def signers_for_people(result: Doc) -> list[tuple[str, str]]:
    """报告医生 and 审核医生 after a two-level sign-off; the one 诊断医师 otherwise; a consultation's
    会诊专家 each."""
    signers = result.get("signers") or []
    if result["kind"] == "consultation" or result["source"] == "consultation":
        return [("会诊专家", s["name"]) for s in signers] or [("会诊专家", result.get("reader_name") or "")]
    reviewer = next((s["name"] for s in signers if s.get("role") == "reviewing"), None)
    if reviewer is None:
        return [("诊断医师", result.get("reader_name") or "")]
    author = next((s["name"] for s in signers if s.get("role") == "reporting"), result.get("reader_name") or "")
    return [("报告医生", author), ("审核医生", reviewer)]


def render_signed(result: Doc, *, signer: Signer, signer_id: str, **kw: Any) -> tuple[bytes, float]:
    """Render and sign in one call (the PDF worker process does both); the signed bytes and the
    signing's own cost in milliseconds."""
    rendered = render(result, **kw)
    started = time.perf_counter()
    signed = signer.sign(rendered, signer_id)
    return signed, (time.perf_counter() - started) * 1000


def build_pdf(result: Doc, *, study: Doc, pdf: bytes, created: str, institution: str, station: str,
              local: LocalTime | None = None) -> Dataset:
    """An Encapsulated PDF instance (PS3.3 A.45.1) in the original study."""
    local = local or LocalTime.named()
    signed = local.dicom(result["signed_at"])
    ds = base_dataset(sop_class_uid=ENCAPSULATED_PDF, sop_instance_uid=result["pdf_sop_instance_uid"], study=study,
                      result=result, created=created, station=station, local=local)
    ds.InstitutionName = institution
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = result["pdf_series_uid"]
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = "远程诊断报告 PDF"
    ds.ConversionType = "WSD"  # SC Equipment: workstation
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = signed.date, signed.time
    ds.AcquisitionDateTime = signed.datetime
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = HEADINGS.get(result["kind"], "诊断报告")
    ds.ConceptNameCodeSequence = Sequence([code(TITLES.get(result["kind"], TITLES["imaging"]))])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")  # OB values have even length
    return ds
