"""A study belongs to the organisation that first sent it: another organisation's instance for it is
refused (0x0124 with an Error Comment) before Success is answered, or, when two processes answered
both at once, set aside in quarantine by the indexer — never merged.  Workstations do not store.

Driven by DCMTK ``storescu`` over loopback against a real gateway (SQLite index, file blobs).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydicom import dcmread

from services.pacs_gateway import statuses
from services.pacs_gateway.ingest import Ingest

from ..dicom_samples import STORESCU, make_instance, write
from ..support import wait_for
from .conftest import CHENGGUAN_CT, COUNTY_RWS, DONGBA_DR

STUDY = "1.2.826.0.1.3680043.8.498.4242"
REFUSED = f"0x{statuses.NOT_AUTHORIZED:04x}"


async def send(gateway, calling: str, *paths: Path) -> str:
    """DCMTK storescu (debug output: statuses and Error Comments); not the helper that waits for indexing."""
    proc = await asyncio.create_subprocess_exec(
        STORESCU, "-d", "-nh", "-aet", calling, "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *map(str, paths),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), 30)
    return output.decode(errors="replace")


def instance(tmp_path: Path, name: str, *, series: str, patient_id: str, sop: str | None = None,
             pixel_value: int = 0) -> Path:
    return write(make_instance(study_uid=STUDY, series_uid=series, sop_instance_uid=sop, patient_id=patient_id,
                               pixel_value=pixel_value), tmp_path / f"{name}.dcm")


def refused(output: str) -> int:
    return output.lower().count(REFUSED)


@pytest.mark.parametrize("native_ul", [True, False], ids=["native", "pynetdicom"])
async def test_another_organisations_instance_for_a_study_is_refused(make_gateway, tmp_path, native_ul):
    gateway = await make_gateway(dicom_native_ul=native_ul)
    owner = instance(tmp_path, "owner", series=STUDY + ".1", patient_id="CG-1")
    out = await send(gateway, CHENGGUAN_CT, owner)
    assert "0x0000: Success" in out and not refused(out), out
    await gateway.service.ingest.settled()
    # Dongba's modality: a new series in Chengguan's study, and a copy of Chengguan's own instance.
    foreign = instance(tmp_path, "foreign", series=STUDY + ".2", patient_id="DB-7", pixel_value=5)
    out = await send(gateway, DONGBA_DR, foreign, owner)
    assert refused(out) == 2 and "study belongs to another organisation" in out, out
    study = await gateway.rt.store.get("studies", STUDY)
    assert study["organization"] == "chengguan-thc" and (study["series_count"], study["instance_count"]) == (1, 1)
    assert await gateway.count("instances") == 1 and await gateway.rt.store.get("series", STUDY + ".2") is None
    assert len(gateway.blob_files()) == 1 and len(await gateway.events("instance.stored")) == 1
    assert not (gateway.data_dir / "quarantine").exists()
    # Dongba's desk is told what was turned away and why (the owner's is not told anything)
    await gateway.service.refusals.flush()
    noted = await gateway.rt.store.find("gateway_refusals", {"organization": "dongba-thc"})
    assert sorted(n["sop_instance_uid"] for n in noted) == sorted(dcmread(p).SOPInstanceUID for p in (foreign, owner))
    assert {(n["kind"], n["status"], n["reason"], n["calling_ae"]) for n in noted} == {
        ("refused", "0x0124", "study belongs to another organisation", DONGBA_DR)}
    assert await gateway.rt.store.count("gateway_refusals", {"organization": "chengguan-thc"}) == 0
    # The owner goes on adding to its study.
    more = instance(tmp_path, "more", series=STUDY + ".3", patient_id="CG-1")
    out = await send(gateway, CHENGGUAN_CT, more)
    assert "0x0000: Success" in out, out
    assert (await gateway.count("instances"), (await gateway.rt.store.get("studies", STUDY))["series_count"]) == (2, 2)


async def test_a_study_not_indexed_yet_is_already_its_first_senders(gateway, tmp_path, monkeypatch):
    # The owner's first instance is answered and still waits for the indexer: the other
    # organisation's instance is refused all the same, before any Success.
    release = asyncio.Event()
    real = Ingest.index_batch

    async def held(self, batch):
        await release.wait()
        return await real(self, batch)
    monkeypatch.setattr(Ingest, "index_batch", held)
    out = await send(gateway, CHENGGUAN_CT, instance(tmp_path, "owner", series=STUDY + ".1", patient_id="CG-1"))
    assert "0x0000: Success" in out, out
    assert await gateway.rt.store.get("studies", STUDY) is None  # not indexed yet
    out = await send(gateway, DONGBA_DR, instance(tmp_path, "foreign", series=STUDY + ".2", patient_id="DB-7"))
    assert refused(out) == 1 and "study belongs to another organisation" in out, out
    release.set()
    assert await gateway.count("instances") == 1
    study = await gateway.rt.store.get("studies", STUDY)
    assert study["organization"] == "chengguan-thc" and study["series_count"] == 1
    assert not (gateway.data_dir / "quarantine").exists()


async def test_two_organisations_racing_for_a_new_study_the_loser_goes_to_quarantine(gateway, tmp_path, monkeypatch):
    # Two receiving processes each answered the first instance of one new study, from two
    # organisations, before either was indexed: neither could see the other's.  Here one process
    # plays both (it keeps no claims), and indexing waits until both are answered.
    monkeypatch.setattr(gateway.service.ingest, "_claim", lambda p: None)
    release = asyncio.Event()
    real = Ingest.index_batch

    async def held(self, batch):
        await release.wait()
        return await real(self, batch)
    monkeypatch.setattr(Ingest, "index_batch", held)
    for calling, series, patient in ((CHENGGUAN_CT, 1, "CG-1"), (DONGBA_DR, 2, "DB-7")):
        out = await send(gateway, calling, instance(tmp_path, calling, series=f"{STUDY}.{series}", patient_id=patient))
        assert "0x0000: Success" in out, out  # both durable when answered
    release.set()

    async def settled() -> bool:
        return (await gateway.count("instances") == 1
                and len(list((gateway.data_dir / "quarantine").rglob("*.dcm"))) == 1)
    await wait_for(settled, timeout=10, what="the first owner's instance indexed, the other in quarantine")
    study = await gateway.rt.store.get("studies", STUDY)
    assert study["organization"] == "chengguan-thc" and (study["series_count"], study["instance_count"]) == (1, 1)
    assert await gateway.rt.store.get("series", f"{STUDY}.2") is None
    kept = next((gateway.data_dir / "quarantine").rglob("*.dcm"))
    assert dcmread(kept).PatientID == "DB-7"
    reason = json.loads((kept.parent / (kept.name[:-4] + ".json")).read_text())
    assert "another organisation" in reason["error"] and reason["organization"] == "dongba-thc"
    [noted] = await gateway.rt.store.find("gateway_refusals", {"organization": "dongba-thc"})
    assert (noted["kind"], noted["study_uid"], noted["reason"]) == (
        "quarantined", STUDY, "study belongs to another organisation")  # answered Success, yet not kept in it
    assert len(await gateway.events("instance.stored")) == 1


async def test_a_workstation_may_not_store(gateway, tmp_path):
    path = write(make_instance(), tmp_path / "ws.dcm")
    out = await send(gateway, COUNTY_RWS, path)
    assert refused(out) == 1 and "workstation AE title may not store" in out, out
    assert await gateway.count("instances") == 0 and gateway.blob_files() == []
    # Nor into a clinic's study: it never takes one over.
    await send(gateway, CHENGGUAN_CT, instance(tmp_path, "owner", series=STUDY + ".1", patient_id="CG-1"))
    out = await send(gateway, COUNTY_RWS, instance(tmp_path, "ws2", series=STUDY + ".9", patient_id="CG-1"))
    assert refused(out) == 1, out
    assert (await gateway.rt.store.get("studies", STUDY))["series_count"] == 1
