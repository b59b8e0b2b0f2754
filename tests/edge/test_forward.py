"""The edge forwards every study to the centre through a poor link: latency, a bandwidth cap,
connections cut mid-transfer and an outage; each instance arrives once and byte-identical, and
the centre announces each study once, when the edge says it is complete."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from services.core import held_studies
from tests import dicom_samples as ds_
from tests.support import wait_for

from .faultproxy import FaultProxy

MODALITY = "CG_CT1"  # a modality AE of chengguan-thc


def random_instance(path: Path, *, study_uid: str, series_uid: str, number: int, rows: int, modality: str,
                    sop_class: str) -> Path:
    ds = ds_.make_instance(study_uid=study_uid, series_uid=series_uid, instance_number=number, rows=rows,
                           columns=rows, modality=modality, sop_class_uid=sop_class, accession_number="")
    ds.PixelData = os.urandom(rows * rows)  # incompressible: the bandwidth cap is what limits
    return ds_.write(ds, path / f"{modality}-{number}-{ds.SOPInstanceUID}.dcm")


def corpus(tmp: Path) -> dict[str, list[Path]]:
    """A small CT (two series), two large-ish DX, a secondary capture standing in for an ECG sheet."""
    studies: dict[str, list[Path]] = {}
    (tmp / "src").mkdir()
    ct = generate_uid()
    studies[ct] = [random_instance(tmp / "src", study_uid=ct, series_uid=s, number=i, rows=64, modality="CT",
                                   sop_class=ds_.CT_IMAGE) for s in (generate_uid(), generate_uid()) for i in range(12)]
    dx = generate_uid()
    series = generate_uid()
    studies[dx] = [random_instance(tmp / "src", study_uid=dx, series_uid=series, number=i, rows=384, modality="DX",
                                   sop_class=ds_.DX_IMAGE) for i in range(2)]
    sc = generate_uid()
    studies[sc] = [random_instance(tmp / "src", study_uid=sc, series_uid=generate_uid(), number=1, rows=128,
                                   modality="ECG", sop_class=ds_.SC_IMAGE)]
    return studies


def storescu(port: int, files: list[Path]) -> float:
    started = time.monotonic()
    out = subprocess.run([ds_.STORESCU, "-aet", MODALITY, "-aec", "CG_EDGE", "127.0.0.1", str(port),
                          *map(str, files)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return time.monotonic() - started


async def blob_sha(rt, doc) -> str:
    h = hashlib.sha256()
    async for chunk in rt.blobs.read_chunks(doc["blob_key"]):
        h.update(chunk)
    return h.hexdigest()


async def test_studies_cross_a_poor_link_exactly_once_byte_identical(centre, link_to, make_edge, tmp_path):
    proxy: FaultProxy = await link_to(latency=0.05, bytes_per_second=2_000_000 / 8,
                                      cut_every_bytes=(20_000, 200_000))
    edge = await make_edge(proxy)
    studies = corpus(tmp_path)
    total = sum(len(f) for f in studies.values())
    # Every association gets its Success at local speed, whatever the link does meanwhile.
    first, *rest = list(studies.values())
    assert await asyncio.to_thread(storescu, edge.dicom_port, first) < 10
    proxy.outage(True)  # the link drops while the technician goes on
    for files in rest:
        assert await asyncio.to_thread(storescu, edge.dicom_port, files) < 10
    await asyncio.sleep(1.0)  # an outage, not a blip: attempts fail through it

    async def nothing_announced_while_down() -> bool:
        return not await centre.events("study.received")
    assert await nothing_announced_while_down()
    proxy.outage(False)

    async def all_arrived() -> bool:
        return await centre.rt.store.count("instances") == total
    await wait_for(all_arrived, timeout=90, what=f"all {total} instances at the centre")

    async def announced() -> bool:
        return len(await centre.events("study.received")) >= len(studies)
    await wait_for(announced, timeout=30, what="every study announced at the centre")
    received = [e["data"]["study_uid"] for e in await centre.events("study.received")]
    assert sorted(received) == sorted(studies), "one study.received per study, no more"
    assert proxy.cuts > 0, "the link did cut connections mid-transfer"
    for uid in studies:
        for local in await edge.rt.store.find("instances", {"study_uid": uid}):
            there = await centre.rt.store.get("instances", local["id"])
            assert there is not None and there["organization"] == "chengguan-thc"
            assert await blob_sha(centre.rt, there) == await blob_sha(edge.rt, local)
        assert not await held_studies.is_held(centre.rt.store, await centre.rt.store.get("studies", uid))
    status = await edge.service.forwarder.status()
    assert status["backlog_studies"] == 0 and status["backlog_instances"] == 0


async def test_a_link_back_is_used_at_once_not_after_the_longest_backoff(centre, link_to, make_edge, tmp_path):
    """Studies that failed through an outage wait out a backoff of up to 30 s each; the heartbeat
    probe finds the link back within a fraction of that and every waiting study goes at once."""
    proxy: FaultProxy = await link_to()
    edge = await make_edge(proxy, first_delay=30.0, max_delay=30.0, probe_seconds=0.2, heartbeat_seconds=60.0)
    proxy.outage(True)
    (tmp_path / "src").mkdir()
    studies = {}
    for n in range(3):
        uid = generate_uid()
        studies[uid] = [random_instance(tmp_path / "src", study_uid=uid, series_uid=generate_uid(), number=1,
                                        rows=32, modality="CT", sop_class=ds_.CT_IMAGE)]
        await asyncio.to_thread(storescu, edge.dicom_port, studies[uid])

    async def each_failed_once() -> bool:
        entries = [await edge.rt.store.get("edge_studies", uid) for uid in studies]
        return all(e is not None and e.get("attempts", 0) >= 1 for e in entries)
    await wait_for(each_failed_once, timeout=30, what="every study failing once through the outage")
    proxy.outage(False)
    back = time.monotonic()

    async def all_arrived() -> bool:
        return await centre.rt.store.count("instances") == len(studies)
    await wait_for(all_arrived, timeout=40, what="the studies at the centre after the link came back")
    # Without the probe, three studies each waiting uniform(0, 30) s all go within 8 s once in 50.
    assert time.monotonic() - back < 8, f"{time.monotonic() - back:.1f} s after the link came back"


async def test_a_study_the_centre_refuses_whole_is_set_aside_not_retried_forever(centre, link_to, make_edge, tmp_path):
    """The centre holds another object under the study's one SOP Instance UID (0xA900 for good):
    nothing of it can be announced, so the edge does not ask to (the centre would answer 422 for
    ever); the study is done at the edge with its refusal shown, and no error stays on the status."""
    from .test_pages import storescu as store_as
    proxy: FaultProxy = await link_to()
    edge = await make_edge(proxy)
    (tmp_path / "src").mkdir()
    uid = generate_uid()
    files = [random_instance(tmp_path / "src", study_uid=uid, series_uid=generate_uid(), number=1, rows=32,
                             modality="CT", sop_class=ds_.CT_IMAGE)]
    sop = str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
    clash = ds_.write(ds_.make_instance(sop_instance_uid=sop, modality="DX", sop_class_uid=ds_.DX_IMAGE),
                      tmp_path / "clash.dcm")
    await asyncio.to_thread(store_as, centre.gateway.dicom_port, [clash], "YILIAN")
    await asyncio.to_thread(storescu, edge.dicom_port, files)

    async def done() -> bool:
        entry = await edge.rt.store.get("edge_studies", uid)
        return entry is not None and entry.get("state") == "done"
    await wait_for(done, timeout=30, what="the wholly refused study done at the edge")
    entry = await edge.rt.store.get("edge_studies", uid)
    assert entry["refused"] == [sop] and entry["refused_reasons"] == {sop: "0xA900"} and entry["attempts"] == 0
    status = await edge.service.status()
    assert status["backlog_studies"] == 0 and status["last_error"] is None
    assert [r["id"] for r in status["recent"]] == [uid]
    assert await centre.rt.store.get("studies", uid) is None  # nothing of it at the centre
