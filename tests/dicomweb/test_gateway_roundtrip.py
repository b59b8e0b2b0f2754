"""C-STORE with DCMTK storescu to the gateway, WADO-RS back out: the very bytes the gateway kept,
with the data the modality sent unconverted (a JPEG 2000 instance, a GB18030 name)."""

from __future__ import annotations

import hashlib

from pydicom import dcmread

from tests.dicom_samples import propose_as_is, raw_patient_name, storescu
from tests.support import wait_for

from .helpers import sample_files, split_multipart

CALLING_AE = "CG_CT1"  # chengguan-thc's CT in the example consortium


async def test_storescu_in_wado_rs_out_byte_identical(web_with_gateway, tmp_path):
    web = web_with_gateway
    files = sample_files(tmp_path / "samples")
    for name in ("j2k", "gb18030"):
        result = await web.run(storescu, web.rt.settings.dicom_port, [files[name]], calling=CALLING_AE,
                               extra=propose_as_is(files[name]))
        assert result.returncode == 0, result.output
    await wait_for(lambda: web.rt.store.count("instances"), what="instances indexed")
    for name in ("j2k", "gb18030"):
        ds = dcmread(files[name])
        doc = await web.rt.store.get("instances", ds.SOPInstanceUID)
        assert doc["calling_ae"] == CALLING_AE and doc["organization"] == "chengguan-thc"
        status, body, headers = await web.get(
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
            user="cg-clinic")
        assert status == 200
        ((part_headers, content),) = split_multipart(body, headers["Content-Type"])
        assert hashlib.sha256(content).hexdigest() == doc["sha256"]  # the blob, bit for bit
        assert content == web.rt.blobs.local_path(doc["blob_key"]).read_bytes()
        # storescu re-encodes what it sends (the gateway tests compare against DCMTK's storescp);
        # here: pixel data and the GB18030 name bytes arrive unconverted
        copy = tmp_path / f"retrieved-{name}.dcm"
        copy.write_bytes(content)
        assert dcmread(copy).PixelData == ds.PixelData
        assert raw_patient_name(copy) == raw_patient_name(files[name])
        assert f"transfer-syntax={ds.file_meta.TransferSyntaxUID}" in part_headers["content-type"]
    # and the Chinese name is searchable over QIDO as over C-FIND
    (found,) = await web.run(web.client("cg-clinic").search_for_studies, search_filters={"PatientName": "张*"})
    assert found["00100010"]["Value"][0]["Alphabetic"] == "张^三"

