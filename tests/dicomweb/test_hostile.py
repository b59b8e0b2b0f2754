"""Hostile data sets over DICOMweb (issue 12): STOW-RS refuses them as C-STORE does (the same
bounded walk and inflate), WADO-RS streams frames and refuses absurd frame lists, and an
instance stored before these checks that cannot be decoded is a clear problem, never a 500."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from tests.dicom_samples import hostile_instance, make_instance, write

from .helpers import STOW_TYPE, multipart

FAILED_SOP_SEQUENCE, FAILURE_REASON, REFERENCED_SOP_INSTANCE = "00081198", "00081197", "00081155"


def failures(body: bytes) -> dict[str, int]:
    doc = json.loads(body)
    return {item[REFERENCED_SOP_INSTANCE]["Value"][0]: item[FAILURE_REASON]["Value"][0]
            for item in doc.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])}


@pytest.mark.parametrize("kind, reason", [
    ("pixel_data_past_end", 0xC210), ("element_past_end", 0xC210), ("unclosed_sequence", 0xC210),
    ("nested_300", 0xC210), ("nested_5000", 0xC210), ("deflate_bomb_64", 0xA700),
])
async def test_stow_refuses_a_hostile_part_and_keeps_the_good_one(web, tmp_path, kind, reason):
    ds, path = hostile_instance(kind, tmp_path)
    good = write(make_instance(), tmp_path / "good.dcm")
    status, body, headers = await web.post("/studies", multipart([path.read_bytes(), good.read_bytes()]),
                                           STOW_TYPE, user="cg-clinic")
    assert status == 202, body
    assert failures(body) == {ds.SOPInstanceUID: reason}
    words = {"nested": "nested deeper than 64", "deflate": "inflates past", "unclosed": "never closed"}
    assert headers["Warning"].startswith(f'299 yilian "{ds.SOPInstanceUID} refused: ')
    assert next((w for k, w in words.items() if kind.startswith(k)), "runs past the end") in headers["Warning"]
    assert await web.rt.store.count("instances") == 1


def _instance_path(ds) -> str:
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


async def _stow(web, path) -> None:
    status, body, _ = await web.post("/studies", multipart([path.read_bytes()]), STOW_TYPE, user="cg-clinic")
    assert status == 200, body


@pytest.mark.parametrize("frames, why", [
    (",".join(["1"] * 300), "more than once"), ("1,2,3,4,5", "5 frames asked of an instance of 4"),
    ("2,9", "out of range"),
])
async def test_absurd_frame_lists_are_400_problems(web, tmp_path, frames, why):
    ds = make_instance(sop_class_uid="1.2.840.10008.5.1.4.1.1.3.1", modality="US", number_of_frames=4)
    await _stow(web, write(ds, tmp_path / "us.dcm"))
    status, body, headers = await web.get(_instance_path(ds) + f"/frames/{frames}", user="cg-clinic")
    assert status == 400 and headers["Content-Type"].startswith("application/problem+json"), body
    assert why in json.loads(body)["detail"]


async def test_frames_are_streamed_one_at_a_time(web, tmp_path):
    """40 frames of 1 MiB: the server holds about one frame at a time, not the whole answer."""
    from tests.dicom_samples import write_large_multiframe
    path = write_large_multiframe(tmp_path / "big.dcm", 40 << 20)
    from pydicom import dcmread
    ds = dcmread(path, stop_before_pixels=True)
    await _stow(web, path)
    url = web.root + _instance_path(ds) + "/frames/" + ",".join(str(n) for n in range(1, 41))
    tracemalloc.start()
    try:
        received = 0
        async with web.session.get(url, headers={"Authorization": f"Bearer {web.token('cg-clinic')}"}) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 16):
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received > 40 << 20
    assert peak < 12 << 20, f"peak {peak >> 20} MiB traced while sending 40 MiB of frames"


@pytest.mark.parametrize("kind", ["nested_300", "nested_5000"])
async def test_a_stored_instance_that_cannot_be_decoded_is_a_clear_problem(web, tmp_path, monkeypatch, kind):
    """Stored before the store-time checks (the ingest's header step without them stands in for
    that), read after them."""
    from services.pacs_gateway import ingest, model
    ds, path = hostile_instance(kind, tmp_path)
    with monkeypatch.context() as m:
        m.setattr(ingest, "_header", lambda received, limits, issuers: model.header_of(ds))
        await _stow(web, path)
    base = _instance_path(ds)
    for suffix, accept in (("/metadata", "application/dicom+json"), ("/rendered", "image/png"),
                           ("/frames/1", "*/*"), ("/bulkdata/7FE00010", "*/*")):
        status, body, headers = await web.get(base + suffix, user="cg-clinic", headers={"Accept": accept})
        assert status == 422 and headers["Content-Type"].startswith("application/problem+json"), (suffix, body)
        assert "nested deeper than 64" in json.loads(body)["detail"], body
    for study in (f"/studies/{ds.StudyInstanceUID}/metadata",):
        assert (await web.get(study, user="cg-clinic"))[0] == 422
    status, body, _ = await web.get("/instances", user="cg-clinic", params={"SOPInstanceUID": ds.SOPInstanceUID})
    assert status == 200 and len(json.loads(body)) == 1  # the index still finds it


async def test_deflated_metadata_is_read_without_inflating_the_pixels(web, tmp_path):
    """A deflated instance within the ceiling: metadata inflates only up to Pixel Data."""
    import dataclasses
    strict = web.rt.settings
    web.rt.settings = dataclasses.replace(strict, max_inflate_ratio=2000)
    ds, path = hostile_instance("deflate_bomb_32", tmp_path)
    try:
        await _stow(web, path)
    finally:
        web.rt.settings = strict
    web.rt.settings = dataclasses.replace(strict, max_inflated_bytes=4 << 20)  # less than the pixels
    try:
        tracemalloc.start()
        try:
            status, body, _ = await web.get(_instance_path(ds) + "/metadata", user="cg-clinic")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 200, body
        assert peak < 8 << 20, f"peak {peak >> 20} MiB traced answering the metadata of 32 MiB of pixels"
        assert json.loads(body)[0]["00100020"]["Value"] == ["P001"]
        status, body, _ = await web.get(_instance_path(ds) + "/rendered", user="cg-clinic")
        assert status == 422 and b"inflates past" in body
    finally:
        web.rt.settings = strict


async def test_pixel_data_bulk_data_is_streamed(web, tmp_path):
    """40 MiB of Pixel Data as bulk data: sent from the file a chunk at a time, byte for byte."""
    import hashlib

    from pydicom import dcmread

    from tests.dicom_samples import dataset_bytes, write_large_multiframe
    path = write_large_multiframe(tmp_path / "big.dcm", 40 << 20)
    ds = dcmread(path, stop_before_pixels=True)
    await _stow(web, path)
    url = web.root + _instance_path(ds) + "/bulkdata/7FE00010"
    body = hashlib.sha256()
    tracemalloc.start()
    try:
        async with web.session.get(url, headers={"Authorization": f"Bearer {web.token('cg-clinic')}"}) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 16):
                body.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20, f"peak {peak >> 20} MiB traced while sending 40 MiB of Pixel Data"
    pixels = dataset_bytes(path)[-(ds.NumberOfFrames * 1024 * 1024):]
    boundary = resp.headers["Content-Type"].split("boundary=")[1].split(";")[0]
    expected = (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + pixels
                + f"\r\n--{boundary}--\r\n".encode())
    assert body.hexdigest() == hashlib.sha256(expected).hexdigest()


async def test_a_frame_that_cannot_be_decoded_is_a_problem_not_a_500(web, tmp_path):
    """JPEG baseline whose one fragment is no JPEG, asked decoded (application/octet-stream only)."""
    from pydicom.encaps import encapsulate
    ds = make_instance(transfer_syntax="1.2.840.10008.1.2.4.50")
    ds.PixelData = encapsulate([b"\xff\xd8 not a jpeg \xff\xd9"])
    ds["PixelData"].VR = "OB"
    await _stow(web, write(ds, tmp_path / "bad-jpeg.dcm"))
    status, body, headers = await web.get(_instance_path(ds) + "/frames/1", user="cg-clinic",
                                          headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert status == 422 and headers["Content-Type"].startswith("application/problem+json"), body
    assert "frame 1 of stored instance" in json.loads(body)["detail"]


async def test_a_later_frame_that_cannot_be_decoded_cuts_the_stream_at_once(web, tmp_path):
    """The head went with frame 1; frame 2 is no JPEG: the client sees a truncated body at once
    (it waited for the rest until its own timeout when the problem middleware answered instead)."""
    import aiohttp
    from pydicom import dcmread
    from pydicom.encaps import encapsulate, generate_frames

    from tests.dicom_samples import real_file
    src = dcmread(real_file("SC_rgb_jpeg_dcmtk.dcm"))
    ds = make_instance(transfer_syntax="1.2.840.10008.1.2.4.50", rows=src.Rows, columns=src.Columns,
                       number_of_frames=2)
    for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "BitsAllocated",
                    "BitsStored", "HighBit"):
        setattr(ds, keyword, src[keyword].value)
    ds.PixelData = encapsulate([next(generate_frames(src.PixelData, number_of_frames=1)), b"\xff\xd8 no \xff\xd9"])
    ds["PixelData"].VR = "OB"
    await _stow(web, write(ds, tmp_path / "half-bad.dcm"))
    headers = {"Authorization": f"Bearer {web.token('cg-clinic')}",
               "Accept": 'multipart/related; type="application/octet-stream"'}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async with session.get(web.root + _instance_path(ds) + "/frames/1,2", headers=headers) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
