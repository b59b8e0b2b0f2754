"""The byte scanner reads the same header pydicom does, or declines and leaves it to pydicom."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import DATA_ROOT
from pydicom.uid import ImplicitVRLittleEndian

from services.pacs_gateway import header, model
from services.core.bounded import data_set_offset as _data_set_offset
from services.pacs_gateway.model import StoreRefused

from ..dicom_samples import CHINESE_NAMES, chinese_instance, make_instance, write


def _both(path: Path) -> tuple[object, object] | None:
    """(pydicom's header or refusal, the scanner's) for a Part 10 file, or None when it is not one."""
    raw = path.read_bytes()
    offset = _data_set_offset(raw[:4096])
    if offset is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(io.BytesIO(raw), stop_before_pixels=True, defer_size=4096)
            syntax = str(ds.file_meta.TransferSyntaxUID)
        except Exception:  # noqa: BLE001 - not ours to judge here
            return None
        try:
            expected: object = model.header_of(ds)
        except StoreRefused as refused:
            expected = ("refused", refused.status, refused.comment)
        except Exception:  # noqa: BLE001 - pydicom cannot read the header at all
            return None
    try:
        got: object = header.scan(raw[offset:], syntax)
    except StoreRefused as refused:
        got = ("refused", refused.status, refused.comment)
    return expected, got


def test_scanner_agrees_with_pydicom_on_every_bundled_file():
    # The files pydicom ships (never its download cache: no network in CI).
    files = sorted(Path(DATA_ROOT, "test_files").rglob("*.dcm")) + sorted(Path(DATA_ROOT, "charset_files").glob("*.dcm"))
    compared = scanned = 0
    for path in files:
        pair = _both(path)
        if pair is None:
            continue
        expected, got = pair
        compared += 1
        if got is None:
            continue  # declined: pydicom parses it
        scanned += 1
        assert got == expected, path.name
    assert compared > 60 and scanned > 0.6 * compared  # it must take the common cases (pydicom ships many big endian files)


@pytest.mark.parametrize("charset", sorted(CHINESE_NAMES))
def test_chinese_names_in_single_byte_free_charsets_are_scanned(tmp_path, charset):
    path = write(chinese_instance(charset), tmp_path / "zh.dcm")
    expected, got = _both(path)
    assert got is not None and got == expected
    assert got.patient_name == CHINESE_NAMES[charset]


def test_implicit_vr_and_sequences_before_the_indexed_attributes(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    ds = make_instance()
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "T-D4000", "SRT"
    ds.ProcedureCodeSequence = Sequence([item])  # (0008,1032): between the study and the patient attributes
    for syntax in (None, ImplicitVRLittleEndian):
        path = tmp_path / f"s{syntax}.dcm"
        if syntax:
            ds.file_meta.TransferSyntaxUID = syntax
        write(ds, path) if not syntax else ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
        expected, got = _both(path)
        assert got is not None and got == expected


def test_iso2022_and_truncated_data_sets_are_left_to_pydicom():
    path = Path(DATA_ROOT, "charset_files", "chrH31.dcm")  # Japanese with ISO 2022 escape sequences
    assert _both(path)[1] is None
    raw = Path(DATA_ROOT, "test_files", "CT_small.dcm").read_bytes()
    offset = _data_set_offset(raw)
    assert header.scan(raw[offset:offset + 300], "1.2.840.10008.1.2.1") is None


def test_bad_uids_are_left_to_pydicom_which_words_the_refusal(tmp_path):
    ds = make_instance()
    ds.SeriesInstanceUID = "1.2.3."
    expected, got = _both(write(ds, tmp_path / "bad.dcm"))
    assert got is None and expected[0] == "refused"


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", ImplicitVRLittleEndian])
@pytest.mark.parametrize("undefined_length", [False, True])
def test_other_patient_ids_give_the_consortium_identity_as_pydicom_does(tmp_path, syntax, undefined_length):
    """Other Patient IDs Sequence (0010,1002): the first valid identifier of a known issuer,
    read alike by the scanner and by pydicom; a failed check digit or an unknown issuer makes none."""
    from pydicom.dataset import Dataset
    from services.core.identity import check_digit

    rid = "41010119600101123" + check_digit("41010119600101123")
    items = []
    for issuer, value in (("CN_RESIDENT_ID", rid[:-1] + ("0" if rid[-1] != "0" else "1")),  # check digit fails
                          ("HOSPITAL_X", "123"), ("CN_RESIDENT_ID", rid.lower()), ("CN_HEALTH_CARD", "H12345678")):
        item = Dataset()
        item.PatientID, item.IssuerOfPatientID, item.TypeOfPatientID = value, issuer, "TEXT"
        items.append(item)
    ds = make_instance(transfer_syntax=syntax)
    ds.OtherPatientIDsSequence = items
    path = write(ds, tmp_path / "x.dcm")
    if undefined_length:
        ds = dcmread(path)
        ds.OtherPatientIDsSequence.is_undefined_length = True
        for item in ds.OtherPatientIDsSequence:
            item.is_undefined_length_sequence_item = True
        ds.save_as(path)
    pydicom_header, scanned = _both(path)
    assert pydicom_header.national_id == scanned.national_id == f"CN_RESIDENT_ID|{rid}"
    none = make_instance(transfer_syntax=syntax)
    none.IssuerOfPatientID = "CN_HEALTH_CARD"
    none.PatientID = "H87654321"  # the Patient ID itself, issued by a known issuer
    pydicom_header, scanned = _both(write(none, tmp_path / "y.dcm"))
    assert pydicom_header.national_id == scanned.national_id == "CN_HEALTH_CARD|H87654321"


def test_other_patient_ids_with_a_nested_sequence_is_left_to_pydicom(tmp_path):
    from pydicom.dataset import Dataset
    from services.core.identity import check_digit

    rid = "41010119600101123" + check_digit("41010119600101123")
    item, qualifiers = Dataset(), Dataset()
    item.PatientID, item.IssuerOfPatientID = rid, "CN_RESIDENT_ID"
    qualifiers.UniversalEntityID = "2.16.156"
    item.IssuerOfPatientIDQualifiersSequence = [qualifiers]
    ds = make_instance()
    ds.OtherPatientIDsSequence = [item]
    pydicom_header, scanned = _both(write(ds, tmp_path / "x.dcm"))
    assert scanned is None and pydicom_header.national_id == f"CN_RESIDENT_ID|{rid}"


@pytest.mark.parametrize("charset", ["GB18030", "ISO_IR 192"])
def test_admission_id_and_requesting_service_and_physician_are_read_and_give_the_record_class(tmp_path, charset):
    """Visit Identification (PS3.3 C.3.2) Admission ID (0038,0010): an inpatient's (住院号); Imaging
    Service Request (C.4.13) Requesting Service (0032,1033) and Requesting Physician (0032,1032)."""
    ds = chinese_instance(charset)
    ds.AdmissionID, ds.RequestingService, ds.RequestingPhysician = "ZY2026001234", "神经内科", "李^医生"
    expected, got = _both(write(ds, tmp_path / "zh.dcm"))
    assert got is not None and got == expected
    assert (got.admission_id, got.requesting_service, got.requesting_physician) == ("ZY2026001234", "神经内科",
                                                                                    "李^医生")
    study = model.study_doc(None, got, organization="chengguan-thc", added=1, new_series=True, now="t")
    assert (study["record_class"], study["requesting_department"], study["requesting_physician"]) == (
        "inpatient", "神经内科", "李^医生")
    del ds.AdmissionID  # no Admission ID: the class is not known (the consortium's default applies)
    _, got = _both(write(ds, tmp_path / "zh2.dcm"))
    assert model.study_doc(None, got, organization="chengguan-thc", added=1, new_series=True,
                           now="t")["record_class"] == ""

