"""Storage commitment with Orthanc as the modality: N-ACTION in, N-EVENT-REPORT on a new association.

Orthanc (the calling AE CG_CT1, a Chengguan modality) asks the gateway to commit what
DCMTK's storescu sent plus one instance it never sent; the gateway reports to
Chengguan's registered SCP, which is the same Orthanc.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests import dicom_samples as ds_
from tests.support import free_port, wait_for

from .test_query_retrieve import CG, moved_consortium, store, wait_listening

pytestmark = pytest.mark.timeout(120)


def http(method: str, url: str, body: object | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as rsp:
        return json.load(rsp)


@pytest.fixture
async def orthanc_modality(tmp_path, gateway):
    """An Orthanc whose AE title is CG_CT1 and which knows the gateway as modality ``yilian``."""
    dicom, port = free_port(), free_port()
    root = tmp_path / "orthanc"
    root.mkdir()
    config = {"Name": "cg-modality", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
              "DicomAet": CG, "DicomPort": dicom, "HttpPort": port, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": [],
              "DicomModalities": {"yilian": [gateway.ae_title, "127.0.0.1", gateway.port]}}
    (root / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen(["/usr/sbin/Orthanc", str(root / "orthanc.json")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    await wait_listening(port, "Orthanc HTTP", proc)
    await wait_listening(dicom, "Orthanc DICOM", proc)
    moved_consortium(gateway, {"CG_TERM": dicom})  # Chengguan's SCP is this Orthanc
    yield f"http://127.0.0.1:{port}"
    proc.kill()  # Orthanc takes ~3.5 s to stop on SIGTERM; its storage is thrown away
    proc.wait(20)


async def commit(base: str, instances: list[tuple[str, str]]) -> dict:
    job = await asyncio.to_thread(http, "POST", f"{base}/modalities/yilian/storage-commitment",
                                  {"DicomInstances": [{"SOPClassUID": c, "SOPInstanceUID": i} for c, i in instances],
                                   "Timeout": 30})
    result: dict = {}

    async def answered() -> bool:
        result.update(await asyncio.to_thread(http, "GET", f"{base}{job['Path']}"))
        return result.get("Status") != "Pending"
    await wait_for(answered, timeout=30, what="the storage commitment report")
    return result


async def test_storage_commitment_reports_committed_and_missing_instances(gateway, tmp_path, orthanc_modality):
    study = ds_.make_study(tmp_path / "in", series=1, instances=2, patient_id="CG001")
    await store(gateway, CG, study.files)
    sent = [(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in map(dcmread, study.files)]

    ok = await commit(orthanc_modality, sent)
    assert ok["Status"] == "Success", ok
    assert sorted((s["SOPClassUID"], s["SOPInstanceUID"]) for s in ok["Success"]) == sorted(sent)

    never_sent = (ds_.CT_IMAGE, generate_uid())
    wrong_class = (ds_.MR_IMAGE, sent[0][1])
    partial = await commit(orthanc_modality, [sent[1], never_sent, wrong_class])
    assert partial["Status"] == "Failure", partial
    assert [s["SOPInstanceUID"] for s in partial["Success"]] == [sent[1][1]]
    reasons = {(f["SOPClassUID"], f["SOPInstanceUID"]): f["FailureReason"] for f in partial["Failures"]}
    assert reasons == {never_sent: 0x0112, wrong_class: 0x0119}  # no such instance; class-instance conflict


async def test_an_instance_indexed_just_after_the_request_is_committed(gateway, tmp_path, orthanc_modality):
    # As when another gateway process acknowledged it a moment before the N-ACTION and is still
    # indexing it: what seems missing is judged again for a moment before the report.
    late = ds_.make_study(tmp_path / "late", series=1, instances=1, patient_id="CG002")
    sent = [(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in map(dcmread, late.files)]
    report = asyncio.create_task(commit(orthanc_modality, sent))

    async def requested() -> bool:
        return await gateway.rt.store.count("storage_commitments") == 1
    await wait_for(requested, timeout=20, interval=0.02, what="the N-ACTION")
    await store(gateway, CG, late.files)
    result = await report
    assert result["Status"] == "Success", result
    assert [s["SOPInstanceUID"] for s in result["Success"]] == [sent[0][1]]
