"""The report as a PDF (Chinese text in a CJK font), and as an Encapsulated PDF instance.

For terminals that cannot show an SR.  Rendering is pure computation (fpdf2); the font file
is checked when the service starts (``DeliverySettings.check``).
"""

from __future__ import annotations

import time
from typing import Any

from fpdf import FPDF
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from ..core.localtime import LocalTime, age_in_years, dicom_date_for_people
from .document import base_dataset
from .signing import Signer
from .sr import TITLES, code

Doc = dict[str, Any]

ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")
SERIES_NUMBER = 9902
HEADINGS = {"imaging": "远程影像诊断报告", "ecg": "远程心电诊断报告", "consultation": "远程会诊意见"}


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


def render(result: Doc, *, study: Doc, institution: str, centre: str, font: str,
           local: LocalTime | None = None) -> bytes:
    local = local or LocalTime.named()
    pdf = FPDF(format="A4")
    pdf.set_title(HEADINGS.get(result["kind"], "诊断报告"))
    pdf.set_creator("Yilian")
    # Machine-readable: the report version this PDF is, and the SR beside it (docs/reports.md, Signature).
    version = result.get("report_version") or 1
    pdf.set_subject(f"report={result.get('report_id') or result['id']};version={version};"
                    f"sr={result['sr_sop_instance_uid']}")
    pdf.add_font("cjk", fname=font)
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_font("cjk", size=16)
    pdf.cell(width, 10, institution, align="C", new_x="LMARGIN", new_y="NEXT")
    heading = HEADINGS.get(result["kind"], "诊断报告")
    if result["source"] == "addendum":
        heading += "（补充报告）"
    pdf.set_font("cjk", size=14)
    pdf.cell(width, 9, heading, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("cjk", size=10.5)
    rows = [("姓名", patient_name(study.get("patient_name") or result.get("patient_name"))),
            ("患者ID", study.get("patient_id") or result.get("patient_id") or ""),
            ("性别", {"M": "男", "F": "女"}.get(study.get("sex") or "", study.get("sex") or "")),
            ("出生日期", birth_date(study.get("birth_date"),
                                   study.get("study_date") or local.dicom(result["signed_at"]).date)),
            ("检查日期", dicom_date_for_people(study.get("study_date"))),
            ("检查号", study.get("accession_number") or result.get("accession_number") or ""),
            ("检查描述", study.get("study_description") or ""),
            ("Study UID", result.get("study_uid") or "")]
    for label, value in rows:
        pdf.cell(28, 6.5, f"{label}：")
        pdf.multi_cell(width - 28, 6.5, str(value), new_x="LMARGIN", new_y="NEXT")
    if result["critical"]:
        pdf.ln(2)
        pdf.set_text_color(200, 0, 0)
        pdf.set_font("cjk", size=13)
        category = result.get("critical_category") or ""
        pdf.multi_cell(width, 8, f"危急值：{category}  —— 请立即处理并在系统中确认", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
    for title, body in (("检查所见", result.get("findings") or ""), ("诊断意见", result.get("impression") or "")):
        pdf.ln(3)
        pdf.set_font("cjk", size=12)
        pdf.cell(width, 8, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("cjk", size=10.5)
        pdf.multi_cell(width, 6.5, body or "—", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font("cjk", size=10.5)
    pdf.multi_cell(width, 6.5, f"{signed_by(result)}    诊断中心：{centre}", new_x="LMARGIN", new_y="NEXT")
    signed = local.for_people(result["signed_at"])
    pdf.multi_cell(width, 6.5, f"签发时间：{signed}    报告编号：{result['id']}    版本：{version}", new_x="LMARGIN",
                   new_y="NEXT")
    pdf.set_font("cjk", size=8)
    pdf.multi_cell(width, 5, "本报告附诊断医师的电子签名，可用 PDF 阅读器或 yilian verify 验证。", align="L",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(width, 5, f"结构化报告（SR）：{result['sr_sop_instance_uid']}", align="L", new_x="LMARGIN",
                   new_y="NEXT")
    return bytes(pdf.output())


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


def signed_by(result: dict) -> str:
    """报告医生 and 审核医生 after a two-level sign-off; the one 诊断医师 otherwise."""
    signers = result.get("signers") or []
    reviewer = next((s["name"] for s in signers if s.get("role") == "reviewing"), None)
    if reviewer is None:
        return f"诊断医师：{result.get('reader_name') or ''}"
    author = next((s["name"] for s in signers if s.get("role") == "reporting"), result.get("reader_name") or "")
    return f"报告医生：{author}    审核医生：{reviewer}"
