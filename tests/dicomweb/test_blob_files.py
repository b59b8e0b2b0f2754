"""WADO-RS reads files through the blob port: a GridFS store (no local files) gets a temporary
copy in its staging directory, removed afterwards."""

from __future__ import annotations

from pydicom import dcmread

from services.api.dicomweb import wado
from services.core import bounded
from tests.contract.adapters import BLOB_ADAPTERS
from tests.dicom_samples import real_file


async def test_frames_and_headers_from_a_store_without_local_files(tmp_path):
    source = real_file("CT_small.dcm")
    copy = tmp_path / "ct.dcm"
    copy.write_bytes(source.read_bytes())
    async with BLOB_ADAPTERS["gridfs-mongomock"](tmp_path) as blobs:
        await blobs.put_file("s/se/ct.dcm", copy)
        assert blobs.local_path("s/se/ct.dcm") is None
        async with wado.local_file(blobs, "s/se/ct.dcm") as path:
            assert path.read_bytes() == source.read_bytes()
            (frame,) = wado.read_frames(path, [1], decode=False)
            assert wado.read_header(path, wado.EXPLICIT_LE, bounded.Limits()).PatientID == "1CT1"
        assert not path.exists()
        assert frame == dcmread(source).PixelData
        assert list(blobs.staging_dir().iterdir()) == []
