"""Orthanc as a township clinic's PACS forwarding a study to Yilian over DICOM."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from pydicom import dcmread

from ..dicom_samples import (CHINESE_NAMES, chinese_instance, dataset_bytes, make_instance, real_file_copy,
                             write)
from ..support import free_port, wait_for
from .conftest import run

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_AE = "CG_PACS"  # registered for chengguan-thc by the test consortium


def _http(url: str, data: bytes | None = None, content_type: str = "application/json") -> object:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    try:
        return json.loads(body)
    except ValueError:
        return body


def _alive(url: str) -> bool:
    try:
        _http(f"{url}/system")
        return True
    except OSError:
        return False


@pytest.fixture
def orthanc_for(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(yilian_port: int) -> str:
        base = tmp_path / "orthanc"
        base.mkdir()
        http = free_port()
        config = {
            "Name": "township-pacs", "StorageDirectory": str(base / "db"), "IndexDirectory": str(base / "db"),
            "DicomAet": ORTHANC_AE, "DicomPort": free_port(), "HttpPort": http, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "StorageCompression": False, "Plugins": [],
            "DicomModalities": {"yilian": ["YILIAN", "127.0.0.1", yilian_port]},
        }
        (base / "orthanc.json").write_text(json.dumps(config))
        procs.append(subprocess.Popen([ORTHANC, str(base / "orthanc.json")], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        return f"http://127.0.0.1:{http}"
    yield start
    for proc in procs:
        proc.kill()  # Orthanc takes ~3.5 s to stop on SIGTERM; its storage is thrown away
        proc.wait(15)


async def test_orthanc_forwards_a_study_to_yilian(make_gateway, orthanc_for, tmp_path):
    gateway = await make_gateway(extra_township_aes=(ORTHANC_AE,), study_quiet_seconds=0.5)
    url = orthanc_for(gateway.port)
    await wait_for(lambda: _alive(url), timeout=30, what="Orthanc REST API")
    first = make_instance(patient_id="CG-77")
    files = [
        write(first, tmp_path / "ct1.dcm"),
        write(make_instance(study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID,
                            patient_id="CG-77", instance_number=2), tmp_path / "ct2.dcm"),
        write(chinese_instance("GB18030", study_uid=first.StudyInstanceUID, patient_id="CG-77",
                               modality="DX", sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1"), tmp_path / "dx.dcm"),
    ]
    uploaded = [await run(_http, f"{url}/instances", p.read_bytes(), "application/dicom") for p in files]
    study_id = uploaded[0]["ParentStudy"]
    reply = await run(_http, f"{url}/modalities/yilian/store",
                      json.dumps({"Resources": [study_id], "Synchronous": True}).encode())
    assert reply["FailedInstancesCount"] == 0 and reply["InstancesCount"] == 3, reply

    assert await gateway.count("instances") == 3
    for item in uploaded:
        original: bytes = await run(_http, f"{url}/instances/{item['ID']}/file")
        tags = await run(_http, f"{url}/instances/{item['ID']}/simplified-tags")
        doc = await gateway.rt.store.get("instances", tags["SOPInstanceUID"])
        assert doc["calling_ae"] == ORTHANC_AE and doc["organization"] == "chengguan-thc"
        kept = Path(gateway.rt.blobs.local_path(doc["blob_key"]))
        held = tmp_path / "orthanc-copy.dcm"
        held.write_bytes(original)
        assert dataset_bytes(kept) == dataset_bytes(held)  # what Orthanc holds, bit for bit
    study = await gateway.rt.store.get("studies", str(first.StudyInstanceUID))
    assert study["modalities"] == ["CT", "DX"] and study["instance_count"] == 3
    assert study["patient_name"] in ("TEST^PATIENT", CHINESE_NAMES["GB18030"])

    async def announced() -> bool:
        return len(await gateway.events("study.received")) == 1
    await wait_for(announced, what="study.received after Orthanc's forward")
    [event] = await gateway.events("study.received")
    assert event["data"]["instance_count"] == 3 and event["data"]["series_count"] == 2


async def test_compressed_instance_through_orthanc_is_kept_compressed(make_gateway, orthanc_for, tmp_path):
    gateway = await make_gateway(extra_township_aes=(ORTHANC_AE,))
    url = orthanc_for(gateway.port)
    await wait_for(lambda: _alive(url), timeout=30, what="Orthanc REST API")
    path = real_file_copy("MR_small_RLE.dcm", tmp_path)
    item = await run(_http, f"{url}/instances", path.read_bytes(), "application/dicom")
    reply = await run(_http, f"{url}/modalities/yilian/store",
                      json.dumps({"Resources": [item["ID"]], "Synchronous": True}).encode())
    assert reply["FailedInstancesCount"] == 0, reply
    assert await gateway.count("instances") == 1  # count() waits for what was acknowledged to be indexed
    [doc] = await gateway.rt.store.find("instances")
    assert doc["transfer_syntax_uid"] == "1.2.840.10008.1.2.5"  # RLE, as Orthanc holds it
    # Orthanc (DCMTK inside) drops group lengths and trailing padding when sending, so compare
    # the compressed pixel data byte for byte and the rest by value.
    kept = dcmread(gateway.rt.blobs.local_path(doc["blob_key"]))
    sent = dcmread(path)
    assert kept.PixelData == sent.PixelData
    assert _values(kept) == _values(sent)


def _values(ds) -> dict:
    return {e.tag: e.value for e in ds if e.tag.element != 0 and e.tag != 0xFFFCFFFC}

