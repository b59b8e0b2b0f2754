"""Orthanc playing the clinic's PACS (its registered SCP) receives the SR and the PDF, filed
under the original study; checked through Orthanc's REST API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from ..support import free_port, wait_for

ORTHANC = "/usr/sbin/Orthanc"


def _get(http: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{http}{path}", timeout=10) as r:
        body = r.read()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body


@pytest.fixture
def orthanc(tmp_path: Path):
    root = tmp_path / "orthanc"
    root.mkdir()
    port, http = free_port(), free_port()
    (root / "orthanc.json").write_text(json.dumps({
        "Name": "clinic-pacs", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "DicomAet": "CG_TERM", "DicomPort": port, "HttpPort": http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": True, "Plugins": [], "DicomAlwaysAllowStore": True}))
    proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    yield port, http, proc
    proc.kill()  # Orthanc takes ~3.5 s to stop on SIGTERM; its storage is thrown away
    proc.wait(timeout=15)


@pytest.mark.orthanc
async def test_orthanc_as_clinic_pacs_receives_sr_and_pdf_in_the_original_study(make_yilian, orthanc):
    port, http, proc = orthanc

    def up() -> bool:
        try:
            return bool(_get(http, "/system"))
        except OSError:
            return False
    await wait_for(lambda: asyncio.to_thread(up), timeout=30, what="Orthanc REST API")
    y = await make_yilian(scp_port=port)
    study_uid = await y.send_study(patient_name="李^四", charset="GB18030")
    report_id = (await y.sign(study_uid, findings="双肺纹理清晰。", impression="心肺未见异常。"))["report_id"]

    await wait_for(lambda: asyncio.to_thread(lambda: len(_get(http, "/instances")) >= 2), timeout=30,
                   what="SR and PDF in Orthanc")
    result = await y.rt.store.get("results", report_id)
    found = {}
    for oid in _get(http, "/instances"):
        tags = _get(http, f"/instances/{oid}/simplified-tags")
        found[tags["SOPInstanceUID"]] = (oid, tags)
    assert set(found) == {result["sr_sop_instance_uid"], result["pdf_sop_instance_uid"]}
    sr_id, sr_tags = found[result["sr_sop_instance_uid"]]
    _, pdf_tags = found[result["pdf_sop_instance_uid"]]
    assert sr_tags["StudyInstanceUID"] == pdf_tags["StudyInstanceUID"] == study_uid
    assert sr_tags["PatientName"] == "李^四" and sr_tags["Modality"] == "SR"
    assert sr_tags["VerificationFlag"] == "VERIFIED" and sr_tags["CompletionFlag"] == "COMPLETE"
    assert pdf_tags["MIMETypeOfEncapsulatedDocument"] == "application/pdf"
    # Orthanc's one study holds both results, each in its own series
    studies = _get(http, "/studies")
    assert len(studies) == 1 and len(_get(http, f"/studies/{studies[0]}")["Series"]) == 2
    pdf = _get(http, f"/instances/{found[result['pdf_sop_instance_uid']][0]}/pdf")
    assert pdf.startswith(b"%PDF")
