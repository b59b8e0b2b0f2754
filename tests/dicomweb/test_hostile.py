"""Hostile data sets over DICOMweb (issue 12): STOW-RS refuses them as C-STORE does (the same
bounded walk and inflate), WADO-RS streams frames and refuses absurd frame lists, and an
instance stored before these checks that cannot be decoded is a clear problem, never a 500."""

from __future__ import annotations

import json

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
    status, body, _ = await web.post("/studies", multipart([path.read_bytes(), good.read_bytes()]), STOW_TYPE,
                                     user="cg-clinic")
    assert status == 202, body
    assert failures(body) == {ds.SOPInstanceUID: reason}
    assert await web.rt.store.count("instances") == 1
