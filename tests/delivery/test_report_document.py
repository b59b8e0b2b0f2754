"""The report document a Chinese clinic expects (docs/reports.md, "The report document"): every
item read back from the PDF's text with pypdf, the QR code decoded back to the verification URL,
and each layout rendered to a PNG with poppler's pdftoppm into test-artifacts/ to be looked at."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader

from services.core.consortium import ConfigError, parse_consortium
from services.core.localtime import LocalTime
from services.delivery.model import result_from_report
from services.delivery.pdf import Layout, render, verification_url
from services.delivery.settings import DEFAULT_FONT

from ..support import EXAMPLE_CONSORTIUM
from .test_documents import ARTIFACTS, CREATED, REPORT, STUDY
from .test_signoff_documents import COUNTERSIGNED, ECG_REPORT

PDFTOPPM = "/usr/bin/pdftoppm"
pytestmark = pytest.mark.skipif(not Path(DEFAULT_FONT).is_file(), reason="fonts-wqy-microhei is not installed")

ORDER = {"requesting_physician": "刘^建华", "requesting_department": "内科", "body_part": "胸部",
         "modality": "CT", "procedure_description": "胸部CT平扫"}
IMAGING = {**COUNTERSIGNED, "clinical_question": "咳嗽、发热3天，查肺部感染", "version": 2,
           "findings": "右下肺见斑片状高密度影，边缘模糊，其内可见支气管充气征。" * 3
           + "\n纵隔居中，未见肿大淋巴结。双侧胸腔未见积液。心影大小形态正常。",
           "impression": "1. 右下肺炎，建议抗感染治疗后复查。\n2. 心、膈未见明显异常。"}
ECG_STUDY = {**STUDY, "study_description": "常规心电图", "modalities": ["ECG"], "accession_number": "E2001"}
URL = verification_url("https://yilian.example.cn/", "rp-tz")


def _text(pdf: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def _picture(pdf: bytes, name: str) -> Path:
    """The PDF as a PNG (150 dpi) beside it in test-artifacts/delivery/, to be looked at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.pdf"
    path.write_bytes(pdf)
    subprocess.run([PDFTOPPM, "-png", "-r", "150", str(path), str(ARTIFACTS / name)], check=True, timeout=60)
    pages = sorted(ARTIFACTS.glob(f"{name}-*.png"))
    assert pages and all(p.stat().st_size > 20_000 for p in pages)
    return pages[0]


def _imaging(page: str) -> bytes:
    return render(result_from_report(IMAGING, at=CREATED) | {"clinical_question": IMAGING["clinical_question"]},
                  study=STUDY, institution="城关镇卫生院", centre="县域医学影像诊断中心", font=DEFAULT_FONT,
                  local=LocalTime.named(), layout=Layout(page=page, verification_url=URL, recognition_mark="HR",
                                                         order=ORDER))


@pytest.mark.parametrize("page", ["A4", "A5"])
def test_an_imaging_report_with_two_signers_as_a_clinic_expects(page):
    pdf = _imaging(page)
    reader = PdfReader(io.BytesIO(pdf))
    width_mm = float(reader.pages[0].mediabox.width) / 72 * 25.4
    assert round(width_mm) == {"A4": 210, "A5": 148}[page]
    text = _text(pdf)
    for expected in ("县域医学影像诊断中心", "医学影像诊断报告", "申请单位：城关镇卫生院", "张三（Zhang San）", "男",
                     "67岁", "A1001", "申请科室", "内科", "申请医生", "刘建华", "检查部位与方法", "胸部", "CT",
                     "胸部CT平扫", "2026-12-02 22:15", "咳嗽、发热3天", "影像所见", "诊断意见", "右下肺炎",
                     "报告医生：周晓明", "审核医生：李秀英", "电子签名", "报告时间：2026-12-03 01:44（UTC+08:00）",
                     "HR", "检查结果互认", URL, "本报告仅供临床参考", "版本：2"):
        assert expected in text.replace(" ", "") or expected in text, (expected, text)
    _picture(pdf, f"report-imaging-{page}")


def test_an_ecg_report_has_its_structured_fields_as_a_table_and_the_template_titles():
    result = result_from_report(ECG_REPORT, at=CREATED)
    pdf = render(result, study=ECG_STUDY, institution="城关镇卫生院", centre="县域心电诊断中心", font=DEFAULT_FONT,
                 local=LocalTime.named(), layout=Layout(verification_url=URL, exam="十二导联常规心电图",
                                                        sections=("波形分析", "心电图诊断")))
    text = _text(pdf)
    for expected in ("心电图诊断报告", "波形分析", "心电图诊断", "项目", "结果", "单位", "心律", "窦性心律", "心率",
                     "75", "次/分", "电轴", "-15", "诊断医师：王建国", "E2001", "本报告仅供临床参考"):
        assert expected in text, (expected, text)
    assert "HR" not in text and "检查结果互认" not in text  # no mark unless the consortium configures one
    _picture(pdf, "report-ecg-A4")


def test_a_long_report_runs_onto_a_second_page_with_nothing_cut_off():
    """Long findings on A5: the text flows onto page 2, the signatures follow it there, every page has
    the footer, and no line is lost (each numbered line is read back)."""
    lines = [f"{i:02d}. 右下肺见斑片状高密度影，边缘模糊，其内可见支气管充气征，邻近胸膜增厚。" for i in range(1, 31)]
    long = {**IMAGING, "findings": "\n".join(lines), "patient_name": "Ouyang^Xiaoming=欧阳^晓明"}
    study = {**STUDY, "patient_name": "Ouyang^Xiaoming=欧阳^晓明"}
    pdf = render(result_from_report(long, at=CREATED) | {"clinical_question": "咳嗽、发热3天，" * 8},
                 study=study, institution="示范县城关镇中心卫生院", centre="示范县人民医院县域医学影像诊断中心",
                 font=DEFAULT_FONT, local=LocalTime.named(), layout=Layout(page="A5", verification_url=URL,
                                                                        recognition_mark="HR", order=ORDER))
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 2
    pages = [p.extract_text() for p in reader.pages]
    assert all("本报告仅供临床参考" in p and f"共 {len(pages)} 页" in p for p in pages)
    text = "".join(pages)
    assert all(f"{i:02d}." in text for i in range(1, 31))
    assert "01.\n" not in text  # Chinese breaks between characters, not after the list number
    assert "报告医生：周晓明" in pages[-1] and "欧阳晓明（Ouyang" in pages[0]
    _picture(pdf, "report-long-A5")


def test_the_qr_code_is_the_verification_url():
    """The QR code decodes (zbarimg, where installed) to GET /api/v1/reports/{id}/verification."""
    assert URL == "https://yilian.example.cn/api/v1/reports/rp-tz/verification"
    assert verification_url(None, "rp-tz") is None and verification_url("https://x", None) is None
    zbarimg = shutil.which("zbarimg")
    if zbarimg is None:
        pytest.skip("zbarimg (zbar-tools) is not installed")
    png = _picture(_imaging("A4"), "report-qr")
    done = subprocess.run([zbarimg, "-q", "--raw", str(png)], capture_output=True, text=True, timeout=60)
    assert URL in done.stdout


def test_recognition_mark_and_page_size_are_consortium_settings():
    text = EXAMPLE_CONSORTIUM.read_text(encoding="utf-8")
    c = parse_consortium(text)
    assert c.recognition_mark is None and c.report_page == "A4"  # the defaults: no mark, A4
    head = "  timezone: Asia/Shanghai"
    assert head in text
    c = parse_consortium(text.replace(head, head + "\n  recognition_mark: HR\n  report_page: A5"))
    assert c.recognition_mark == "HR" and c.report_page == "A5"
    with pytest.raises(ConfigError, match=r"consortium\.report_page must be one of A4, A5"):
        parse_consortium(text.replace(head, head + "\n  report_page: Letter"))
    with pytest.raises(ConfigError, match=r"consortium\.recognition_mark .* is malformed"):
        parse_consortium(text.replace(head, head + "\n  recognition_mark: TOO-LONG-MARK"))


# --- delivered: what the service adds to the document ------------------------------------------

@pytest.mark.dcmtk
async def test_the_delivered_pdf_has_the_order_the_question_and_the_verification_link(make_yilian, clinic_scp):
    """The clinic's order (requesting physician, department, procedure), the reading request's clinical
    question and the QR code / link under YILIAN_PUBLIC_URL reach the signed PDF the terminal gets."""
    import pydicom

    from services.delivery.signature_cli import read_document

    clinic_scp.start()
    y = await make_yilian(scp_port=clinic_scp.port, public_url="https://yilian.example.cn")
    study_uid = await y.send_study(accession_number="ACC-RD1")
    async with y.rt.store.transaction() as tx:  # as the workflow's orders keep it (services/workflow/orders)
        await tx.insert("orders", {"id": "od-rd1", "organization": "chengguan-thc", "accession_number": "ACC-RD1",
                                   "requesting_physician": "刘^建华", "requesting_department": "内科",
                                   "body_part": "胸部", "modality": "CT", "procedure_description": "胸部CT平扫"})
    request = await y.sign(study_uid)
    report_id = request["report_id"]
    await y.delivered(report_id)
    doc = next(p for p in clinic_scp.files() if pydicom.dcmread(p).Modality == "DOC")
    pdf, _ = read_document(doc)
    text = _text(pdf)
    for expected in ("医学影像诊断报告", "申请医生", "刘建华", "内科", "胸部CT平扫", "发热咳嗽三天",
                     f"https://yilian.example.cn/api/v1/reports/{report_id}/verification", "本报告仅供临床参考",
                     "诊断医师：王建国", "电子签名"):
        assert expected in text, (expected, text)
    _picture(pdf, "report-delivered")


async def test_without_an_order_the_document_prints_the_requester_and_the_class_from_the_dicom_header(
        make_yilian, clinic_scp):
    """No order: Requesting Service (0032,1033) and Requesting Physician (0032,1032) of the images are
    the report's 申请科室 / 申请医生; an Admission ID (0038,0010) makes its record class inpatient."""
    import pydicom

    from services.delivery.signature_cli import read_document

    clinic_scp.start()
    y = await make_yilian(scp_port=clinic_scp.port)
    study_uid = await y.send_study(accession_number="ACC-RD2", charset="ISO_IR 192", extra={
        "RequestingService": "呼吸内科", "RequestingPhysician": "赵^敏", "AdmissionID": "ZY0001"})
    request = await y.sign(study_uid)
    report = await y.rt.store.get("reports", request["report_id"])
    assert (report["requesting_department"], report["requesting_physician"], report["record_class"]) == (
        "呼吸内科", "赵^敏", "inpatient")
    await y.delivered(request["report_id"])
    doc = next(p for p in clinic_scp.files() if pydicom.dcmread(p).Modality == "DOC")
    text = _text(read_document(doc)[0])
    for expected in ("申请科室", "呼吸内科", "申请医生", "赵敏"):
        assert expected in text, (expected, text)


def test_the_font_is_chosen_for_every_text_the_document_prints(tmp_path):
    """A rare character only in the order or a structured field still selects the whole font."""
    from services.delivery.fonts import Fonts
    from services.delivery.pdf import texts

    fonts = Fonts(DEFAULT_FONT, tmp_path)
    fonts.subset_path.write_bytes(b"")  # as if the common-characters subset were built
    result = result_from_report(ECG_REPORT, at=CREATED)
    assert fonts.for_text(*texts(result, Layout(order={"requesting_physician": "李^明"}))) == str(fonts.subset_path)
    assert fonts.for_text(*texts(result, Layout(order={"requesting_physician": "李^䶮"}))) == DEFAULT_FONT
    rare = {**ECG_REPORT, "structured": [{"key": "note", "label": "备注", "type": "text", "unit": None, "value": "𠀋"}]}
    assert fonts.for_text(*texts(result_from_report(rare, at=CREATED), None)) == DEFAULT_FONT
