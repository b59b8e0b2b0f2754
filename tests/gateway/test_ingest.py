"""C-ECHO, C-STORE and association acceptance, driven by DCMTK (and pynetdicom as an odd SCU).

Every test talks DICOM over loopback to a gateway with a real SQLite index and file blobs.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config

from services.core.consortium import parse_consortium
from services.pacs_gateway import statuses

from ..dicom_samples import (CHINESE_NAMES, PYTHON_CODEC, REAL_FILES, chinese_instance, dataset_bytes, echoscu,
                             make_instance, make_study, propose_as_is, raw_patient_name, real_file_copy, start_storescp,
                             storescu, transfer_syntax_of, write)
from ..support import EXAMPLE_CONSORTIUM, free_port, wait_for
from .conftest import CHENGGUAN_CT, DONGBA_DR, run


def pynetdicom_store(port: int, path: Path, *, calling: str = CHENGGUAN_CT) -> int:
    """Send ``path`` raw (file meta gives the request's UIDs): lets a test send what DCMTK never would."""
    meta = read_file_meta_info(path) if _has_meta(path) else None  # the File Meta only: any data set goes
    ae = AE(ae_title=calling)
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="YILIAN")
        assert assoc.is_established
        status = assoc.send_c_store(path)
        assoc.release()
        return status
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def _has_meta(path: Path) -> bool:
    return Path(path).read_bytes()[128:132] == b"DICM"


async def test_c_echo_from_a_registered_modality(gateway):
    result = await run(echoscu, gateway.port, calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output


async def test_unknown_calling_ae_is_rejected_and_logged(gateway, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="yilian.pacs_gateway.scp")
    echo = await run(echoscu, gateway.port, calling="STRANGER")
    assert echo.returncode != 0
    assert "Rejected Permanent" in echo.output and "Calling AE Title Not Recognized" in echo.output
    study = make_study(tmp_path, instances=1)
    store = await run(storescu, gateway.port, study.files, calling="STRANGER")
    assert store.returncode != 0 and "Calling AE Title Not Recognized" in store.output
    assert await gateway.count("instances") == 0
    rejected = [r for r in caplog.records if r.getMessage() == "association rejected"]
    assert rejected and rejected[0].calling_ae == "STRANGER" and rejected[0].called_ae == "YILIAN"
    assert rejected[0].reason == "calling AE title not recognised" and rejected[0].peer.startswith("127.0.0.1:")


async def test_called_ae_title_must_match(gateway):
    echo = await run(echoscu, gateway.port, calling=CHENGGUAN_CT, called="SOMEONE_ELSE")
    assert echo.returncode != 0 and "Called AE Title Not Recognized" in echo.output


async def test_consortium_changes_apply_to_the_next_association(gateway):
    text = EXAMPLE_CONSORTIUM.read_text("utf-8").replace("[CG_DR1, CG_US1, CG_CT1, CG_ECG1]",
                                                         "[CG_DR1, CG_US1, CG_ECG1, CG_NEW_US]")
    gateway.rt.consortium = parse_consortium(text)
    dropped = await run(echoscu, gateway.port, calling=CHENGGUAN_CT)
    added = await run(echoscu, gateway.port, calling="CG_NEW_US")
    assert dropped.returncode != 0 and "Calling AE Title Not Recognized" in dropped.output
    assert added.returncode == 0, added.output


@contextlib.contextmanager
def reference_storescp(directory: Path):
    port = free_port()
    proc = start_storescp(port, directory)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_real_files_are_stored_bit_for_bit_as_sent(gateway, tmp_path):
    """pydicom's real CT, MR, ECG, SR and compressed files, each in its own transfer syntax.

    DCMTK's storescp ``+B`` writes exactly what storescu sent: the gateway's file must hold
    the same data set bytes, with the accepted transfer syntax in its File Meta.
    """
    reference = tmp_path / "reference"
    files = [real_file_copy(name, tmp_path / "sent") for name in REAL_FILES]
    with reference_storescp(reference) as ref_port:
        await wait_for(lambda: _listening(ref_port), what="storescp listening")
        for path in files:
            options = propose_as_is(path)
            to_ref = await run(storescu, ref_port, [path], calling=CHENGGUAN_CT, called="STORESCP", extra=options)
            assert to_ref.returncode == 0, to_ref.output
            to_us = await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT, extra=options)
            assert to_us.returncode == 0, to_us.output
    sent = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in reference.iterdir()}
    assert len(sent) == len(files)
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        doc = await gateway.rt.store.get("instances", uid)
        assert doc is not None, f"{path.name} not indexed"
        assert doc["transfer_syntax_uid"] == transfer_syntax_of(path), path.name
        stored = gateway.rt.blobs.local_path(doc["blob_key"])
        assert dataset_bytes(stored) == dataset_bytes(sent[uid]), f"{path.name}: bytes differ from what was sent"
        assert str(dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID) == doc["transfer_syntax_uid"]
        assert doc["size"] == stored.stat().st_size and doc["organization"] == "chengguan-thc"
    events = await gateway.events("instance.stored")
    assert len(events) == len(files)
    assert gateway.staging_files() == []


def _listening(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_index_holds_patient_study_series_and_instance(gateway, tmp_path):
    study = make_study(tmp_path, series=2, instances=3, patient_id="CG-0042", study_description="CT chest")
    result = await run(storescu, gateway.port, study.files, calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output
    doc = await gateway.rt.store.get("studies", study.study_uid)
    assert doc["organization"] == "chengguan-thc" and doc["patient_id"] == "CG-0042"
    assert (doc["series_count"], doc["instance_count"], doc["modalities"]) == (2, 6, ["CT"])
    assert doc["state"] == "receiving" and doc["revision"] == 0 and doc["study_description"] == "CT chest"
    assert doc["patient_name"] == "TEST^PATIENT" and doc["patient_name_key"] == "TEST^PATIENT"
    series = await gateway.rt.store.find("series", {"study_uid": study.study_uid})
    assert sorted(s["instance_count"] for s in series) == [3, 3]
    assert {s["series_number"] for s in series} == {1, 2} and {s["modality"] for s in series} == {"CT"}
    patient = await gateway.rt.store.get("patients", "chengguan-thc|CG-0042")
    assert patient["study_count"] == 1 and patient["birth_date"] == "19600101"
    instance = (await gateway.rt.store.find("instances", {"study_uid": study.study_uid}, limit=1))[0]
    assert instance["calling_ae"] == CHENGGUAN_CT and instance["rows"] == 8 and len(instance["sha256"]) == 64
    event = (await gateway.events("instance.stored"))[0]
    assert event["source"] == "/yilian/pacs_gateway" and event["subject"] == study.study_uid
    assert event["data"]["organization"] == "chengguan-thc" and event["data"]["replaced"] is False


async def test_invalid_uids_are_refused_and_earlier_instances_stay(gateway, tmp_path):
    good = write(make_instance(), tmp_path / "good.dcm")
    bad_study = write(make_instance(study_uid="1.2.840.abc.7"), tmp_path / "bad_study.dcm")
    no_series = make_instance()
    del no_series.SeriesInstanceUID
    no_series = write(no_series, tmp_path / "no_series.dcm")
    result = await run(storescu, gateway.port, [good, bad_study, no_series], calling=CHENGGUAN_CT,
                       extra=["-nh", "-d"])
    assert "DIMSE Status                  : 0x0000: Success" in result.output
    assert result.output.lower().count("0xc211") >= 2, result.output
    assert "Study Instance UID is not a valid UID" in result.output
    assert "Series Instance UID missing" in result.output
    assert await gateway.count("instances") == 1
    assert await gateway.rt.store.get("instances", str(dcmread(good).SOPInstanceUID)) is not None
    assert len(gateway.blob_files()) == 1 and gateway.staging_files() == []
    assert len(await gateway.events("instance.stored")) == 1


async def test_sop_instance_uid_must_match_the_request(gateway, tmp_path):
    ds = make_instance(sop_instance_uid="1.2.826.0.1.3680043.8.498.1000001")
    path = write(ds, tmp_path / "mismatch.dcm")
    # The File Meta (read first) names another instance; the request will carry that one.
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"1.2.826.0.1.3680043.8.498.1000001", b"1.2.826.0.1.3680043.8.498.1000002", 1))
    status = await run(pynetdicom_store, gateway.port, path)
    assert status.Status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "SOP Instance UID differs" in status.ErrorComment
    assert await gateway.count("instances") == 0 and gateway.blob_files() == []


async def test_unparsable_dataset_is_refused(gateway, tmp_path):
    ds = make_instance()
    path = write(ds, tmp_path / "garbage.dcm")
    head = path.read_bytes()[:len(path.read_bytes()) - len(dataset_bytes(path))]
    # A valid File Meta, then an element whose length runs far past the end of the data set.
    path.write_bytes(head + b"\x08\x00\x16\x00UI\xff\xff" + b"1.2.3")
    status = await run(pynetdicom_store, gateway.port, path)
    assert status.Status in (statuses.CANNOT_UNDERSTAND_UNPARSABLE, statuses.CANNOT_UNDERSTAND_BAD_UID)
    assert status.ErrorComment
    assert await gateway.count("instances") == 0 and gateway.staging_files() == []


async def test_instance_over_the_size_limit_is_refused_out_of_resources(make_gateway, tmp_path):
    gateway = await make_gateway(max_instance_bytes=20_000)
    small = write(make_instance(), tmp_path / "small.dcm")
    large = write(make_instance(rows=256, columns=256), tmp_path / "large.dcm")
    result = await run(storescu, gateway.port, [small, large], calling=CHENGGUAN_CT, extra=["-nh", "-d"])
    assert "0xa700" in result.output.lower() and "exceeds limit" in result.output, result.output
    assert await gateway.count("instances") == 1 and len(gateway.blob_files()) == 1


async def test_identical_duplicate_is_success_and_stored_once(gateway, tmp_path):
    path = write(make_instance(), tmp_path / "one.dcm")
    for _ in range(2):
        result = await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT)
        assert result.returncode == 0 and "Store Response (Success)" in result.output
    assert await gateway.count("instances") == 1 and len(gateway.blob_files()) == 1
    assert len(await gateway.events("instance.stored")) == 1
    study = (await gateway.rt.store.find("studies"))[0]
    assert study["instance_count"] == 1


async def _send_two_versions(gateway, tmp_path) -> tuple[Path, Path, str]:
    first = make_instance(pixel_value=1)
    second = make_instance(pixel_value=2, study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID,
                           sop_instance_uid=first.SOPInstanceUID)
    a, b = write(first, tmp_path / "a.dcm"), write(second, tmp_path / "b.dcm")
    for path in (a, b):
        result = await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT)
        assert result.returncode == 0 and "Store Response (Success)" in result.output, result.output
    return a, b, str(first.SOPInstanceUID)


async def test_different_duplicate_keep_first(make_gateway, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    gateway = await make_gateway(duplicate_policy="keep_first")
    a, _, uid = await _send_two_versions(gateway, tmp_path)
    doc = await gateway.rt.store.get("instances", uid)
    assert dataset_bytes(gateway.rt.blobs.local_path(doc["blob_key"]))[-64:] == dataset_bytes(a)[-64:]
    assert len(gateway.blob_files()) == 1 and len(await gateway.events("instance.stored")) == 1
    assert any("kept the first" in r.getMessage() and r.sop_instance_uid == uid for r in caplog.records)


async def test_different_duplicate_replace(make_gateway, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    gateway = await make_gateway(duplicate_policy="replace")
    _, b, uid = await _send_two_versions(gateway, tmp_path)
    doc = await gateway.rt.store.get("instances", uid)
    assert dataset_bytes(gateway.rt.blobs.local_path(doc["blob_key"]))[-64:] == dataset_bytes(b)[-64:]
    assert len(gateway.blob_files()) == 1  # the first copy's file is gone
    events = await gateway.events("instance.stored")
    assert [e["data"]["replaced"] for e in events] == [False, True]
    study = (await gateway.rt.store.find("studies"))[0]
    assert study["instance_count"] == 1
    assert any("replaced" in r.getMessage() and r.sop_instance_uid == uid for r in caplog.records)


@pytest.mark.parametrize("charset", list(CHINESE_NAMES))
async def test_chinese_character_sets_round_trip(gateway, tmp_path, charset):
    ds = chinese_instance(charset, patient_id=f"CN-{charset}")
    path = write(ds, tmp_path / "cn.dcm")
    raw = raw_patient_name(path)
    assert raw.rstrip(b" ") == CHINESE_NAMES[charset].encode(PYTHON_CODEC[charset])  # even-length padding
    if charset != "ISO_IR 192":
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")  # really GB-encoded on the wire, not UTF-8
    result = await run(storescu, gateway.port, [path], calling=DONGBA_DR)
    assert result.returncode == 0, result.output
    doc = await gateway.rt.store.get("instances", str(ds.SOPInstanceUID))
    stored = gateway.rt.blobs.local_path(doc["blob_key"])
    assert raw_patient_name(stored) == raw  # the original bytes are kept
    study = await gateway.rt.store.get("studies", str(ds.StudyInstanceUID))
    assert study["patient_name"] == CHINESE_NAMES[charset] and study["study_description"] == "胸部正位"
    assert study["specific_character_set"] == charset and study["organization"] == "dongba-thc"
    patient = await gateway.rt.store.get("patients", f"dongba-thc|CN-{charset}")
    assert patient["patient_name"] == CHINESE_NAMES[charset]


async def test_operators_name_is_kept_per_study(gateway, tmp_path):
    """Operators' Name (0008,1070), GB18030 and several values, is kept on the study: image quality
    is rated per technician (docs/quality.md); a study sent by two technicians names both."""
    study_uid = "1.2.826.0.1.3680043.8.498.7701"
    first = make_instance(study_uid=study_uid, charset="GB18030", patient_name="王^五")
    first.OperatorsName = ["李技师", "ZHANG^SAN"]
    second = make_instance(study_uid=study_uid, instance_number=2, modality="CT")
    second.OperatorsName = "ZHAO^LIU"
    plain = make_instance(instance_number=3)  # no Operators' Name: nothing recorded, nothing refused
    paths = [write(ds, tmp_path / f"op{i}.dcm") for i, ds in enumerate((first, second, plain))]
    result = await run(storescu, gateway.port, paths, calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output
    doc = await gateway.rt.store.get("studies", study_uid)
    assert doc["operators"] == ["ZHANG^SAN", "ZHAO^LIU", "李技师"]
    other = await gateway.rt.store.get("studies", str(plain.StudyInstanceUID))
    assert "operators" not in other
