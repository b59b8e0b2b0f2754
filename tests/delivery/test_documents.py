"""What a clinic reads in the SR and the PDF: local times with their offset (the signing instant
01:44 in Beijing is 17:44 UTC the day before), one verifying observer per signer, the patient's
Chinese name and age.  The SR is read back by DCMTK's dsrdump, the PDF rendered by poppler's
pdftoppm (the PNG is kept under test-artifacts/delivery/ for a person to look at)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pypdf import PdfReader

from services.core.consortium import ConfigError, load_consortium, parse_consortium
from services.core.localtime import LocalTime, age_in_years
from services.core.settings import Settings
from services.delivery.model import result_from_consultation, result_from_report, verifying_observers
from services.delivery.pdf import birth_date, build_pdf, patient_name, render
from services.delivery.settings import DEFAULT_FONT
from services.delivery.sr import build_sr

from ..support import EXAMPLE_CONSORTIUM

DSRDUMP, PDFTOPPM = "/usr/bin/dsrdump", "/usr/bin/pdftoppm"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "delivery"

# Signed 01:44:58 on 3 December in Beijing = 17:44:58 UTC on 2 December.
SIGNED = "2026-12-02T17:44:58.433Z"
CREATED = "2026-12-02T17:45:01.000Z"
REPORT = {"report_id": "rp-tz", "request_id": "rr-1", "study_uid": "1.2.826.0.1.3680043.10.1",
          "organization": "chengguan-thc", "centre": "county-imaging", "kind": "imaging", "reader_id": "dr-wang",
          "reader_name": "王建国", "signed_at": SIGNED, "findings": "右下肺见斑片状高密度影。",
          "impression": "右下肺炎。", "critical": False, "critical_category": None, "addendum_of": None,
          "patient_id": "CG001", "patient_name": "Zhang^San=张^三"}
STUDY = {"patient_name": "Zhang^San=张^三", "patient_id": "CG001", "birth_date": "19581203", "sex": "M",
         "study_date": "20261202", "study_time": "221500", "accession_number": "A1001",
         "study_description": "胸部正位"}
CONSULTATION = {"consultation_id": "cs-1", "opinion_id": "co-1", "organization": "chengguan-thc",
                "centre": "county-imaging", "study_uids": ["1.2.826.0.1.3680043.10.1"], "patient_id": "CG001",
                "patient_name": "Zhang^San=张^三", "signed_at": SIGNED,
                "signers": [{"id": "dr-wang", "name": "王建国", "centre": "county-imaging"},
                            {"id": "dr-chen", "name": "陈志强", "centre": "city-imaging"}],
                "assessment": "考虑肺炎", "recommendations": {"text": "抗感染治疗"}, "critical": False,
                "lead": "dr-wang"}


def _dsrdump(ds: pydicom.Dataset, path: Path) -> str:
    ds.save_as(path, enforce_file_format=True)
    done = subprocess.run([DSRDUMP, "+Pc", str(path)], capture_output=True, timeout=30)
    out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, out
    assert "Error" not in out and "Warning" not in out, out
    return out


# --- 10: times ------------------------------------------------------------------------------

def test_an_instant_is_written_in_the_consortium_zone_for_people_and_for_dicom():
    local = LocalTime.named()  # Asia/Shanghai by default
    when = local.dicom(SIGNED)
    assert (when.date, when.time, when.offset) == ("20261203", "014458.433", "+0800")
    assert when.datetime == "20261203014458.433+0800"
    assert local.for_people(SIGNED) == "2026-12-03 01:44"
    assert local.iso(SIGNED) == "2026-12-03T01:44:58.433+08:00"
    assert LocalTime.named("UTC").for_people(SIGNED) == "2026-12-02 17:44"
    assert LocalTime.named("America/New_York").dicom(SIGNED).offset == "-0500"


def test_sr_and_pdf_instance_carry_local_dates_and_times_with_the_offset(tmp_path):
    result = result_from_report(REPORT, at=CREATED)
    sr = build_sr(result, study=STUDY, evidence=[], created=CREATED, institution="县域影像诊断中心", station="YILIAN",
                  local=LocalTime.named())
    text = _dsrdump(sr, tmp_path / "sr.dcm")
    back = pydicom.dcmread(tmp_path / "sr.dcm")
    assert (back.ContentDate, back.ContentTime) == ("20261203", "014458.433")
    assert back.TimezoneOffsetFromUTC == "+0800"
    assert (back.InstanceCreationDate, back.InstanceCreationTime) == ("20261203", "014501.000")
    assert back.VerifyingObserverSequence[0].VerificationDateTime == "20261203014458.433+0800"
    signed_item = [i for i in back.ContentSequence if i.ValueType == "DATETIME"][0]
    assert signed_item.DateTime == "20261203014458.433+0800"
    doc = build_pdf(result, study=STUDY, pdf=b"%PDF-1.4\n", created=CREATED, institution="x", station="YILIAN",
                    local=LocalTime.named())
    assert (doc.ContentDate, doc.ContentTime, doc.TimezoneOffsetFromUTC) == ("20261203", "014458.433", "+0800")
    assert doc.AcquisitionDateTime == "20261203014458.433+0800"


def test_the_time_zone_is_a_setting_checked_at_start(monkeypatch, tmp_path):
    text = EXAMPLE_CONSORTIUM.read_text("utf-8")
    assert load_consortium(EXAMPLE_CONSORTIUM).timezone == "Asia/Shanghai"
    line = "  timezone: Asia/Shanghai"
    assert line in text
    assert parse_consortium(text.replace(line, "  timezone: Asia/Urumqi")).timezone == "Asia/Urumqi"
    assert parse_consortium(text.replace(line, "")).timezone == "Asia/Shanghai"  # the default
    with pytest.raises(ConfigError, match=r"consortium\.timezone.*Mars/Olympus"):
        parse_consortium(text.replace(line, "  timezone: Mars/Olympus"))
    monkeypatch.setenv("YILIAN_TIMEZONE", "Mars/Olympus")
    with pytest.raises(SystemExit, match="YILIAN_TIMEZONE.*Mars/Olympus"):
        Settings.from_env()
    monkeypatch.setenv("YILIAN_TIMEZONE", "UTC")
    assert Settings.from_env().timezone == "UTC"


@pytest.mark.skipif(not Path(DEFAULT_FONT).is_file(), reason="fonts-wqy-microhei is not installed")
def test_pdf_prints_the_signing_time_in_local_time(tmp_path):
    result = result_from_report(REPORT, at=CREATED)
    pdf = render(result, study=STUDY, institution="城关镇卫生院", centre="县域影像诊断中心", font=DEFAULT_FONT,
                 local=LocalTime.named())
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "报告时间：2026-12-03 01:44" in text
    assert "17:44" not in text and "T17" not in text


# --- 11: one verifying observer per signer --------------------------------------------------

def test_consultation_sr_names_each_signer_with_his_own_organisation(tmp_path):
    consortium = load_consortium(EXAMPLE_CONSORTIUM)
    result = result_from_consultation(CONSULTATION, at=CREATED)
    observers = verifying_observers(consortium, result, default_organization="县域影像诊断中心")
    assert observers == [("王建国", consortium.centres["county-imaging"].name),
                         ("陈志强", consortium.centres["city-imaging"].name)]
    sr = build_sr(result, study=STUDY, evidence=[], created=CREATED, institution="县域影像诊断中心", station="YILIAN",
                  observers=observers)
    text = _dsrdump(sr, tmp_path / "consult.dcm")
    back = pydicom.dcmread(tmp_path / "consult.dcm")
    verifying = back.VerifyingObserverSequence
    assert [str(v.VerifyingObserverName) for v in verifying] == ["王建国", "陈志强"]
    assert [v.VerifyingOrganization for v in verifying] == [consortium.centres["county-imaging"].name,
                                                            consortium.centres["city-imaging"].name]
    assert "、" not in text
    persons = [str(i.PersonName) for i in back.ContentSequence if i.ValueType == "PNAME"]
    assert persons == ["王建国", "陈志强"]
    orgs = [i.TextValue for i in back.ContentSequence
            if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == "121009"]
    assert orgs == [v.VerifyingOrganization for v in verifying]
    assert "王建国" in text and "陈志强" in text


def test_a_report_has_its_reader_as_the_one_verifying_observer():
    consortium = load_consortium(EXAMPLE_CONSORTIUM)
    result = result_from_report(REPORT, at=CREATED)
    assert verifying_observers(consortium, result, default_organization="x") == \
        [("王建国", consortium.centres["county-imaging"].name)]
    legacy = {**result, "signers": None}  # recorded before signers were kept
    assert verifying_observers(consortium, legacy, default_organization="中心") == [("王建国", "中心")]


# --- 12: the patient on the PDF -------------------------------------------------------------

def test_patient_name_and_age_as_a_chinese_reader_expects():
    assert patient_name("Zhang^San=张^三") == "张三（Zhang San）"
    assert patient_name("张^三") == "张三"
    assert patient_name("=张^三") == "张三"
    assert patient_name("Zhang^San") == "Zhang San"
    assert patient_name("") == ""
    assert age_in_years("19581203", "20261202") == 67 and age_in_years("19581202", "20261202") == 68
    assert birth_date("19581203", "20261202") == "1958-12-03（67岁）"
    assert birth_date("", "20261202") == ""


@pytest.mark.skipif(not Path(DEFAULT_FONT).is_file(), reason="fonts-wqy-microhei is not installed")
def test_pdf_shows_the_chinese_name_birth_date_age_and_local_signing_time(tmp_path):
    result = result_from_report(REPORT, at=CREATED)
    pdf = render(result, study=STUDY, institution="城关镇卫生院", centre="县域影像诊断中心", font=DEFAULT_FONT,
                 local=LocalTime.named())
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    text = "".join(page.extract_text() for page in PdfReader(path).pages)
    assert "张三（Zhang San）" in text
    assert "67岁" in text  # 年龄 (a Chinese report shows the age, not the birth date)
    assert "2026-12-02" in text  # the study date, as a date
    assert "报告时间：2026-12-03 01:44" in text
    assert "17:44" not in text and "T17" not in text and "Z " not in text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    subprocess.run([PDFTOPPM, "-png", "-r", "80", "-singlefile", str(path), str(ARTIFACTS / "report")],
                   check=True, timeout=60)
    png = ARTIFACTS / "report.png"
    assert png.stat().st_size > 10_000
    shutil.copy(path, ARTIFACTS / "report.pdf")


def test_webhook_and_inbox_carry_the_local_signing_time_beside_utc():
    from services.delivery.channels import inbox
    from services.delivery.service import webhook_document
    result = result_from_report(REPORT, at=CREATED)
    doc = webhook_document(result, {"id": "dl-1"}, LocalTime.named())
    assert doc["signed_at"] == SIGNED  # stored and sent as UTC
    assert doc["signed_at_local"] == "2026-12-03T01:44:58.433+08:00" and doc["timezone"] == "Asia/Shanghai"
    assert inbox.summary(result, LocalTime.named())["signed_at_local"] == "2026-12-03 01:44"
