"""DICOMweb with dicomweb-client as a real client: STOW-RS, QIDO-RS, WADO-RS (instances,
metadata, bulk data, frames, rendered), bytes compared with what was sent."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import generate_frames

from .helpers import STOW_TYPE, datasets, multipart, sample_files, split_multipart

JPEG2000 = "1.2.840.10008.1.2.4.91"


@pytest.fixture
async def stored(web, tmp_path):
    """The four sample files stored by cg-clinic with dicomweb-client (STOW-RS)."""
    files = sample_files(tmp_path / "samples")
    ds = datasets(files)
    response = await web.run(web.client("cg-clinic").store_instances, list(ds.values()))
    return files, ds, response


def uids(results, keyword="StudyInstanceUID"):
    from pydicom.datadict import tag_for_keyword
    key = f"{tag_for_keyword(keyword):08X}"
    return {r[key]["Value"][0] for r in results}


async def test_stow_goes_through_the_gateway_ingest(web, stored):
    files, ds, response = stored
    assert len(response.ReferencedSOPSequence) == 4 and "FailedSOPSequence" not in response
    assert {i.ReferencedSOPInstanceUID for i in response.ReferencedSOPSequence} == {d.SOPInstanceUID
                                                                                  for d in ds.values()}
    assert await web.rt.store.count("instances") == 4
    events = await web.events("instance.stored")
    assert len(events) == 4
    assert {e["data"]["organization"] for e in events} == {"chengguan-thc"}
    assert {e["data"]["calling_ae"] for e in events} == {"STOW-RS"}
    study = await web.rt.store.get("studies", ds["gb18030"].StudyInstanceUID)
    assert study["patient_name"] == "张^三" and study["state"] == "receiving"  # the announcer takes it from here
    # the Retrieve URL of each instance works
    url = response.ReferencedSOPSequence[0].RetrieveURL
    assert url.startswith("http://127.0.0.1") and "/series/" in url


async def test_qido_matches_like_c_find(web, stored):
    _, ds, _ = stored
    client = web.client("cg-clinic")
    everything = await web.run(client.search_for_studies)
    assert uids(everything) == {d.StudyInstanceUID for d in ds.values()}
    # Chinese names: wildcard and exact, case-insensitive Latin
    (zhang,) = await web.run(client.search_for_studies, search_filters={"PatientName": "张*"})
    assert zhang["00100010"]["Value"][0]["Alphabetic"] == "张^三"
    assert uids(await web.run(client.search_for_studies, search_filters={"PatientName": "张^三"})) == {
        ds["gb18030"].StudyInstanceUID}
    assert uids(await web.run(client.search_for_studies, search_filters={"PatientName": "compressedsamples^ct1"})
                ) == {ds["ct"].StudyInstanceUID}
    # date ranges, modality, tag keys, UID lists
    assert uids(await web.run(client.search_for_studies, search_filters={"StudyDate": "20040101-20041231"})) == {
        ds[k].StudyInstanceUID for k in ("ct", "mr", "j2k")}
    assert uids(await web.run(client.search_for_studies, search_filters={"StudyDate": "20260101-"})) == {
        ds["gb18030"].StudyInstanceUID}
    assert uids(await web.run(client.search_for_studies, search_filters={"ModalitiesInStudy": "MR"})) == {
        ds["mr"].StudyInstanceUID}
    assert uids(await web.run(client.search_for_studies, search_filters={"00100020": "1CT1"})) == {
        ds["ct"].StudyInstanceUID}
    two = f"{ds['ct'].StudyInstanceUID},{ds['mr'].StudyInstanceUID}"
    assert uids(await web.run(client.search_for_studies, search_filters={"StudyInstanceUID": two})) == {
        ds["ct"].StudyInstanceUID, ds["mr"].StudyInstanceUID}
    assert await web.run(client.search_for_studies, search_filters={"PatientName": "nobody*"}) == []
    # limit / offset page through everything exactly once
    first = await web.run(client.search_for_studies, limit=2)
    rest = await web.run(client.search_for_studies, limit=2, offset=2)
    assert len(first) == 2 and len(rest) == 2 and uids(first) | uids(rest) == uids(everything)
    # includefield
    (plain,) = await web.run(client.search_for_series, ds["ct"].StudyInstanceUID)
    assert plain["00080060"]["Value"] == ["CT"] and "00100010" not in plain
    (more,) = await web.run(client.search_for_series, ds["ct"].StudyInstanceUID, fields=["PatientName", "00100020"])
    assert more["00100010"]["Value"][0]["Alphabetic"] == "CompressedSamples^CT1" and more["00100020"]["Value"] == [
        "1CT1"]
    (instance,) = await web.run(client.search_for_instances, ds["j2k"].StudyInstanceUID, fields=["all"])
    assert instance["00280010"]["Value"] == [1024] and instance["00080018"]["Value"] == [ds["j2k"].SOPInstanceUID]
    assert "00100010" in instance
    # all series, all instances, instances of a series
    assert uids(await web.run(client.search_for_series, search_filters={"Modality": "NM"}),
                "SeriesInstanceUID") == {ds["j2k"].SeriesInstanceUID}
    assert len(await web.run(client.search_for_instances)) == 4
    assert len(await web.run(client.search_for_instances, ds["mr"].StudyInstanceUID,
                             ds["mr"].SeriesInstanceUID)) == 1


async def test_qido_bad_queries_are_400_and_unsupported_keys_warn(web, stored):
    status, body, _ = await web.get("/studies", user="cg-clinic", params={"StudyDate": "2004-13-45x"})
    assert status == 400 and b"StudyDate" in body
    status, body, _ = await web.get("/studies", user="cg-clinic", params={"NoSuchKeyword": "1"})
    assert status == 400 and b"NoSuchKeyword" in body
    status, body, _ = await web.get("/studies", user="cg-clinic", params={"limit": "-1"})
    assert status == 400
    status, body, headers = await web.get("/studies", user="cg-clinic", params={"Manufacturer": "GE"})
    assert status == 200 and "Manufacturer" in headers["Warning"]
    status, body, headers = await web.get("/studies", user="cg-clinic", params={"includefield": "00091001,00081030"})
    assert status == 200 and "00091001" in headers["Warning"] and b'"00081030"' in body
    status, body, headers = await web.get("/studies", user="cg-clinic", params={"PatientName": "nobody"})
    assert status == 200 and body == b"[]" and headers["Content-Type"] == "application/dicom+json"


async def test_wado_sends_instances_bit_for_bit(web, tmp_path):
    files = sample_files(tmp_path / "samples")
    sent = {name: path.read_bytes() for name, path in files.items()}
    status, body, _ = await web.post("/studies", multipart([sent["ct"], sent["j2k"]]), STOW_TYPE, user="cg-clinic")
    assert status == 200, body
    ct, j2k = dcmread(files["ct"]), dcmread(files["j2k"])
    for name, ds in (("ct", ct), ("j2k", j2k)):
        status, body, headers = await web.get(f"/studies/{ds.StudyInstanceUID}", user="cg-clinic")
        assert status == 200 and headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
        ((part_headers, content),) = split_multipart(body, headers["Content-Type"])
        assert content == sent[name], name
        assert part_headers["content-type"] == (f"application/dicom; transfer-syntax="
                                                f"{ds.file_meta.TransferSyntaxUID}")
        assert hashlib.sha256(content).hexdigest() == (await web.rt.store.get("instances", ds.SOPInstanceUID))["sha256"]
    # series and instance level, through dicomweb-client
    client = web.client("cg-clinic")
    (series,) = await web.run(client.retrieve_series, ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert series.PixelData == ct.PixelData
    instance = await web.run(client.retrieve_instance, j2k.StudyInstanceUID, j2k.SeriesInstanceUID,
                             j2k.SOPInstanceUID, media_types=(("application/dicom", "*"),))
    assert instance.PixelData == j2k.PixelData and instance.file_meta.TransferSyntaxUID == JPEG2000
    # a transfer syntax other than the stored one: 406, never silently transcoded
    path = f"/studies/{j2k.StudyInstanceUID}/series/{j2k.SeriesInstanceUID}/instances/{j2k.SOPInstanceUID}"
    status, body, _ = await web.get(path, user="cg-clinic", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'})
    assert status == 406 and JPEG2000.encode() in body
    status, _, _ = await web.get(path, user="cg-clinic", headers={"Accept": "application/pdf"})
    assert status == 406
    status, _, headers = await web.get(path, user="cg-clinic", headers={
        "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={JPEG2000}'})
    assert status == 200 and f"transfer-syntax={JPEG2000}" in headers["Content-Type"]


async def test_metadata_bulkdata_and_frames(web, stored):
    _, ds, _ = stored
    client = web.client("cg-clinic")
    ct, j2k, gb = ds["ct"], ds["j2k"], ds["gb18030"]
    metadata = await web.run(client.retrieve_study_metadata, gb.StudyInstanceUID)
    assert metadata[0]["00100010"]["Value"][0]["Alphabetic"] == "张^三"
    assert metadata[0]["00081030"]["Value"] == ["胸部正位"]
    meta = await web.run(client.retrieve_instance_metadata, ct.StudyInstanceUID, ct.SeriesInstanceUID,
                           ct.SOPInstanceUID)
    pixel = meta["7FE00010"]
    assert pixel["vr"] == "OW" and "BulkDataURI" in pixel and "InlineBinary" not in pixel
    assert meta["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]
    # URIs are built from the request's Host header, and dicomweb-client sends it without the port
    assert pixel["BulkDataURI"].startswith("http://127.0.0.1/dicomweb/studies/")
    uri = pixel["BulkDataURI"].replace("http://127.0.0.1/", web.base + "/")
    assert await web.run(client.retrieve_bulkdata, uri) == [ct.PixelData]
    assert len(await web.run(client.retrieve_series_metadata, ct.StudyInstanceUID, ct.SeriesInstanceUID)) == 1
    # frames: uncompressed cut from the file, compressed as stored, or decoded when only raw is accepted
    (frame,) = await web.run(client.retrieve_instance_frames, ct.StudyInstanceUID, ct.SeriesInstanceUID,
                             ct.SOPInstanceUID, [1])
    assert frame == ct.PixelData
    (jp2,) = await web.run(client.retrieve_instance_frames, j2k.StudyInstanceUID, j2k.SeriesInstanceUID,
                           j2k.SOPInstanceUID, [1], media_types=(("image/jp2", JPEG2000),))
    assert jp2 == next(generate_frames(j2k.PixelData, number_of_frames=1)) and jp2[:2] == b"\xff\x4f"
    (raw,) = await web.run(client.retrieve_instance_frames, j2k.StudyInstanceUID, j2k.SeriesInstanceUID,
                           j2k.SOPInstanceUID, [1], media_types=("application/octet-stream",))
    assert raw == j2k.pixel_array.astype("<u2").tobytes()
    base = f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}"
    assert (await web.get(base + "/frames/2", user="cg-clinic"))[0] == 400
    assert (await web.get(base + "/frames/x", user="cg-clinic"))[0] == 400
    assert (await web.get(base + "/bulkdata/00100010x", user="cg-clinic"))[0] == 400
    assert (await web.get(base + "/bulkdata/00091001", user="cg-clinic"))[0] == 404  # text, not bulk data
    assert (await web.get(base + "/bulkdata/00420011", user="cg-clinic"))[0] == 404  # absent


async def test_rendered_png_and_jpeg_with_windowing(web, stored):
    _, ds, _ = stored
    client = web.client("cg-clinic")
    ct, j2k, mr = ds["ct"], ds["j2k"], ds["mr"]
    png = await web.run(client.retrieve_instance_rendered, ct.StudyInstanceUID, ct.SeriesInstanceUID,
                        ct.SOPInstanceUID, media_types=("image/png",))
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (128, 128) and image.mode == "L"
    assert len(np.unique(np.asarray(image))) > 16  # a real picture, not a flat field
    jpeg = await web.run(client.retrieve_instance_rendered, j2k.StudyInstanceUID, j2k.SeriesInstanceUID,
                         j2k.SOPInstanceUID, media_types=("image/jpeg",), params={"viewport": "128,128"})
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (32, 128)  # 256 x 1024 fitted, aspect kept
    base = f"/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}/instances/{mr.SOPInstanceUID}"
    _, default, _ = await web.get(base + "/rendered", user="cg-clinic", headers={"Accept": "image/png"})
    _, narrow, _ = await web.get(base + "/rendered", user="cg-clinic", headers={"Accept": "image/png"},
                                 params={"window": "600,100,linear"})
    _, frame, _ = await web.get(base + "/frames/1/rendered", user="cg-clinic", headers={"Accept": "image/png"})
    assert default != narrow and frame == default
    assert Image.open(io.BytesIO(narrow)).size == (64, 64)
    assert (await web.get(base + "/rendered", user="cg-clinic", params={"window": "abc"}))[0] == 400
    assert (await web.get(base + "/rendered", user="cg-clinic", params={"viewport": "0,10"}))[0] == 400
    assert (await web.get(base + "/rendered", user="cg-clinic", headers={"Accept": "image/gif"}))[0] == 406


async def test_multiframe_frames_and_a_waveform_without_pixels(web, tmp_path):
    from tests.dicom_samples import make_instance, real_file, write
    ds = make_instance(sop_class_uid="1.2.840.10008.5.1.4.1.1.3.1", modality="US", rows=8, columns=8,
                       number_of_frames=4)
    ds.PixelData = b"".join(bytes([10 * (f + 1)]) * 64 for f in range(4))
    path = write(ds, tmp_path / "us.dcm")
    ecg = real_file("waveform_ecg.dcm")
    status, body, _ = await web.post("/studies", multipart([path.read_bytes(), ecg.read_bytes()]), STOW_TYPE,
                                     user="cg-clinic")
    assert status == 200, body
    client = web.client("cg-clinic")
    frames = await web.run(client.retrieve_instance_frames, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                           ds.SOPInstanceUID, [3, 1])
    assert frames == [bytes([30]) * 64, bytes([10]) * 64]
    base = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    status, png, _ = await web.get(base + "/frames/3/rendered", user="cg-clinic", headers={"Accept": "image/png"})
    assert status == 200 and Image.open(io.BytesIO(png)).size == (8, 8)
    assert (await web.get(base + "/frames/5", user="cg-clinic"))[0] == 400
    assert (await web.get(base + "/frames/5/rendered", user="cg-clinic"))[0] == 400
    # an ECG: metadata without Pixel Data, and nothing to render
    waveform = dcmread(ecg, stop_before_pixels=True)
    meta = await web.run(client.retrieve_instance_metadata, waveform.StudyInstanceUID, waveform.SeriesInstanceUID,
                         waveform.SOPInstanceUID)
    assert "7FE00010" not in meta and meta["54000100"]["vr"] == "SQ"
    ecg_base = (f"/studies/{waveform.StudyInstanceUID}/series/{waveform.SeriesInstanceUID}"
                f"/instances/{waveform.SOPInstanceUID}")
    status, body, _ = await web.get(ecg_base + "/rendered", user="cg-clinic")
    assert status == 400 and b"no pixel data" in body
    assert (await web.get(ecg_base + "/frames/1", user="cg-clinic"))[0] == 404
