"""Hostile data sets over C-STORE (issue 12): refused with a failure status, never acknowledged.

A decompression bomb, a data set that is not whole (a length past its end, a sequence never
closed) and sequences nested hundreds of levels deep — each built byte by byte
(``dicom_samples.hostile_instance``), sent by DCMTK ``storescu`` where it will send it, else
raw by pynetdicom (the bytes as they are: DCMTK will not read a file whose Pixel Data is "larger
than remaining bytes in file"), through both upper layers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ..dicom_samples import hostile_instance, make_instance, storescu, write
from .conftest import CHENGGUAN_CT, run
from .test_ingest import pynetdicom_store


def send_raw(port: int, path: Path, *, calling: str = CHENGGUAN_CT) -> tuple[int, str]:
    """C-STORE ``path``'s data set as it is on disk: (status, Error Comment)."""
    rsp = pynetdicom_store(port, path, calling=calling)
    return int(rsp.Status), str(rsp.get("ErrorComment", ""))


@pytest.mark.parametrize("native_ul", [True, False], ids=["native-ul", "pynetdicom"])
@pytest.mark.parametrize("kind, status, comment", [
    ("pixel_data_past_end", 0xC210, "(7FE0,0010) length"),
    ("element_past_end", 0xC210, "(7FE1,0010) length"),
    ("unclosed_sequence", 0xC210, "never closed"),
    ("nested_300", 0xC210, "nested deeper than 64"),
    ("nested_5000", 0xC210, "nested deeper than 64"),
    ("deflate_bomb_64", 0xA700, "inflates past"),
])
async def test_hostile_data_set_is_refused_and_nothing_kept(make_gateway, tmp_path, native_ul, kind, status,
                                                            comment):
    gw = await make_gateway(dicom_native_ul=native_ul)
    ds, path = hostile_instance(kind, tmp_path)
    got = await run(send_raw, gw.port, path)
    assert got[0] == status and comment in got[1], (hex(got[0]), got[1])
    assert await gw.count("instances") == 0
    assert gw.blob_files() == []


async def test_storescu_is_told_why_a_nested_data_set_is_refused(gateway, tmp_path):
    """What a modality sees: DCMTK storescu sends the 300-level data set and gets the reason back."""
    _, path = hostile_instance("nested_300", tmp_path)
    result = await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT, extra=["-R", "-xe", "-d"])
    assert "0xc210" in result.output.lower() and "nested deeper than 64" in result.output, result.output
    assert await gateway.count("instances") == 0


async def test_storescu_deflate_bomb_refused_out_of_resources(gateway, tmp_path):
    _, path = hostile_instance("deflate_bomb_64", tmp_path)
    result = await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT, extra=["-R", "-xd", "-d"])
    assert "0xa700" in result.output.lower() and "inflates past" in result.output, result.output
    assert await gateway.count("instances") == 0


async def test_limits_are_settings(make_gateway, tmp_path):
    """A deflated instance within the ceiling is stored; nesting within the configured depth too."""
    gw = await make_gateway(max_sequence_depth=400, max_inflate_ratio=2000)
    _, nested = hostile_instance("nested_300", tmp_path / "a")
    _, bomb = hostile_instance("deflate_bomb_4", tmp_path / "b")
    assert (await run(send_raw, gw.port, nested))[0] == 0x0000
    assert (await run(send_raw, gw.port, bomb))[0] == 0x0000
    assert await gw.count("instances") == 2


async def test_deflated_instances_of_ordinary_ratio_are_stored(gateway, tmp_path):
    """In memory, staged (over 1 MiB deflated: random pixels), and one whose header only pydicom
    reads (ISO 2022 code extensions), each parsed from the one bounded inflate."""
    import os
    small = make_instance(transfer_syntax="1.2.840.10008.1.2.1.99", rows=64, columns=64, patient_id="D1")
    small.PixelData = bytes(range(256)) * 16
    large = make_instance(transfer_syntax="1.2.840.10008.1.2.1.99", rows=1024, columns=1536, patient_id="D2")
    large.PixelData = os.urandom(1024 * 1536)
    iso2022 = make_instance(transfer_syntax="1.2.840.10008.1.2.1.99", patient_id="D3")
    iso2022.SpecificCharacterSet = ["", "ISO 2022 IR 58"]
    paths = [write(ds, tmp_path / f"{n}.dcm") for n, ds in enumerate((small, large, iso2022))]
    result = await run(storescu, gateway.port, paths, calling=CHENGGUAN_CT, extra=["-R", "-xd"])
    assert result.returncode == 0 and "error" not in result.output.lower(), result.output
    assert await gateway.count("instances") == 3
    for ds in (small, large, iso2022):
        assert (await gateway.rt.store.get("instances", ds.SOPInstanceUID))["transfer_syntax_uid"] == \
            "1.2.840.10008.1.2.1.99"
    assert await gateway.count("patients", {"patient_id": "D3"}) == 1


async def test_retrieve_refuses_to_decode_a_stored_undecodable_instance(make_gateway, tmp_path, monkeypatch):
    """Stored before the depth limit (the header step without it stands in for that): a C-GET or
    C-MOVE that must convert it (load) is refused by the store's walk before pydicom decodes it,
    and its sub-operation fails (``_sub_operations``) instead of the DIMSE thread crashing."""
    from services.core import bounded
    from services.pacs_gateway import ingest, model, retrieve
    gw = await make_gateway()
    ds, nested = hostile_instance("nested_300", tmp_path)
    with monkeypatch.context() as m:
        m.setattr(ingest, "_header", lambda received, limits, issuers: model.header_of(ds))
        assert (await run(send_raw, gw.port, nested))[0] == 0x0000
    await gw.service.ingest.settled()
    doc = await gw.rt.store.get("instances", ds.SOPInstanceUID)
    with pytest.raises(bounded.TooDeep, match="nested deeper than 64"):
        await run(retrieve.load, gw.service, doc)
