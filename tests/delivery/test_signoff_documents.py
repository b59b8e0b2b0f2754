"""Both signers of a two-level sign-off (报告医生 / 审核医生) on what the clinic files: one Verifying
Observer each in the SR (read back by DCMTK's dsrdump), both names and roles on the PDF."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pydicom
import pytest
from pypdf import PdfReader

from services.core.consortium import load_consortium
from services.core.localtime import LocalTime
from services.delivery.model import result_from_report, verifying_observers
from services.delivery.pdf import render
from services.delivery.settings import DEFAULT_FONT
from services.delivery.sr import build_sr

from ..support import EXAMPLE_CONSORTIUM
from .test_documents import CREATED, REPORT, STUDY

DSRDUMP = "/usr/bin/dsrdump"
COUNTERSIGNED = {**REPORT, "reader_id": "dr-zhou", "reader_name": "周晓明", "reviewer_id": "dr-li",
                 "reviewer_name": "李秀英",
                 "signers": [{"role": "reporting", "id": "dr-zhou", "name": "周晓明", "title": "住院医师",
                              "licence_number": "110410000034567", "centre": "county-imaging",
                              "at": "2026-12-02T17:30:00.000Z"},
                             {"role": "reviewing", "id": "dr-li", "name": "李秀英", "title": "主治医师",
                              "licence_number": "110410000023456", "centre": "county-imaging",
                              "at": REPORT["signed_at"]}]}


def test_a_countersigned_report_has_both_signers_as_verifying_observers(tmp_path):
    consortium = load_consortium(EXAMPLE_CONSORTIUM)
    result = result_from_report(COUNTERSIGNED, at=CREATED)
    assert [(s["name"], s["role"]) for s in result["signers"]] == [("周晓明", "reporting"), ("李秀英", "reviewing")]
    observers = verifying_observers(consortium, result, default_organization="x")
    centre = consortium.centres["county-imaging"].name
    assert observers == [("周晓明", centre), ("李秀英", centre)]
    sr = build_sr(result, study=STUDY, evidence=[], created=CREATED, institution=centre, station="YILIAN",
                  observers=observers, local=LocalTime.named())
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    done = subprocess.run([DSRDUMP, "+Pc", str(tmp_path / "sr.dcm")], capture_output=True, timeout=30)
    out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0 and "Error" not in out, out
    back = pydicom.dcmread(tmp_path / "sr.dcm")
    assert [str(v.VerifyingObserverName) for v in back.VerifyingObserverSequence] == ["周晓明", "李秀英"]
    assert "周晓明" in out and "李秀英" in out


@pytest.mark.skipif(not Path(DEFAULT_FONT).is_file(), reason="fonts-wqy-microhei is not installed")
def test_the_pdf_names_the_reporting_and_the_reviewing_physician():
    pdf = render(result_from_report(COUNTERSIGNED, at=CREATED), study=STUDY, institution="城关镇卫生院",
                 centre="县域影像诊断中心", font=DEFAULT_FONT, local=LocalTime.named())
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "报告医生：周晓明" in text and "审核医生：李秀英" in text
    single = render(result_from_report(REPORT, at=CREATED), study=STUDY, institution="城关镇卫生院",
                    centre="县域影像诊断中心", font=DEFAULT_FONT, local=LocalTime.named())
    assert "诊断医师：王建国" in "".join(p.extract_text() for p in PdfReader(io.BytesIO(single)).pages)


ECG_REPORT = {**REPORT, "report_id": "rp-ecg", "kind": "ecg", "findings": "P波规律出现，PR间期0.16s。",
              "impression": "1. 窦性心律；2. 正常心电图。", "template_id": "ecg-12-lead", "template_version": 1,
              "structured": [{"key": "rhythm", "label": "心律", "type": "choice", "unit": None, "value": "窦性心律"},
                             {"key": "heart_rate", "label": "心率", "type": "number", "unit": "次/分", "value": 75},
                             {"key": "axis", "label": "电轴", "type": "number", "unit": "°", "value": -15}]}


def test_template_fields_are_coded_items_of_the_sr_not_one_text_blob(tmp_path):
    result = result_from_report(ECG_REPORT, at=CREATED)
    sr = build_sr(result, study=STUDY, evidence=[], created=CREATED, institution="县域心电诊断中心", station="YILIAN",
                  local=LocalTime.named())
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR: Basic Text SR has no NUM
    sr.save_as(tmp_path / "ecg.dcm", enforce_file_format=True)
    done = subprocess.run([DSRDUMP, "+Pc", str(tmp_path / "ecg.dcm")], capture_output=True, timeout=30)
    out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0 and "Error" not in out and "Warning" not in out, out
    back = pydicom.dcmread(tmp_path / "ecg.dcm")
    findings = next(i for i in back.ContentSequence if i.ValueType == "CONTAINER"
                    and i.ConceptNameCodeSequence[0].CodeValue == "121070")
    items = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in findings.ContentSequence}
    assert items["心律"].ValueType == "TEXT" and items["心律"].TextValue == "窦性心律"
    rate = items["心率"].MeasuredValueSequence[0]
    assert items["心率"].ValueType == "NUM" and float(rate.NumericValue) == 75
    assert (rate.MeasurementUnitsCodeSequence[0].CodeValue, rate.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator) \
        == ("/min", "UCUM")
    assert float(items["电轴"].MeasuredValueSequence[0].NumericValue) == -15
    assert items["电轴"].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "deg"
    assert "心率" in out and "窦性心律" in out
    # Without fields the SR stays a Basic Text SR, as before.
    assert build_sr(result_from_report(REPORT, at=CREATED), study=STUDY, evidence=[], created=CREATED,
                    institution="x", station="YILIAN").SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.11"
