"""The issue's proof at full scale: 500 instances (small CT, a few large DX, 12-lead ECGs) sent by
DCMTK ``storescu`` to a real ``yilian edge`` process that forwards them to the centre over a poor
link — 200 ms added latency, 2 Mbit/s, connections cut at random mid-transfer — and a 3-minute
total outage.  Every association gets Success at local speed; every instance arrives once and
byte-identical; one ``study.received`` per study.

It takes about six minutes, so the suite skips it unless ``YILIAN_TEST_EDGE_SCALE=1``
(``make proof-edge``); the same paths are walked at small scale by ``test_forward.py``,
``test_crash.py`` and the results tests in every run."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from services.core.auth import issue_token
from tests import dicom_samples as ds_
from tests.dicomweb.conftest import SECRET
from tests.e2e.process import YilianProcess
from tests.ecg import synthetic
from tests.support import EXAMPLE_CONSORTIUM, wait_for

from .faultproxy import FaultProxy
from .test_crash import audit_outcomes
from .test_forward import storescu

pytestmark = pytest.mark.skipif(os.environ.get("YILIAN_TEST_EDGE_SCALE") != "1",
                                reason="the full-scale edge proof takes ~6 min: make proof-edge")

OUTAGE_SECONDS = float(os.environ.get("YILIAN_TEST_EDGE_OUTAGE_SECONDS", "180"))
LINK = {"latency": 0.2, "bytes_per_second": 2_000_000 / 8, "cut_every_bytes": (300_000, 3_000_000)}


def half_compressible(n: int) -> bytes:
    """Pixel data with about 4 bits of entropy per byte: gzip halves it, as it does real images."""
    return bytes(b & 0x0F for b in os.urandom(n))


def image(directory: Path, *, study_uid: str, series_uid: str, number: int, rows: int, modality: str,
          sop_class: str, patient: str) -> Path:
    ds = ds_.make_instance(study_uid=study_uid, series_uid=series_uid, instance_number=number, rows=rows,
                           columns=rows, modality=modality, sop_class_uid=sop_class, accession_number="",
                           patient_id=patient)
    ds.PixelData = half_compressible(rows * rows)
    return ds_.write(ds, directory / f"{modality}-{number}-{ds.SOPInstanceUID}.dcm")


def corpus(directory: Path) -> dict[str, list[Path]]:
    """500 instances: four CT studies of 118 slices, three DX of 1 MB, 25 twelve-lead ECGs."""
    directory.mkdir(parents=True)
    studies: dict[str, list[Path]] = {}
    for n in range(4):
        uid, series = generate_uid(), generate_uid()
        studies[uid] = [image(directory, study_uid=uid, series_uid=series, number=i + 1, rows=128, modality="CT",
                              sop_class=ds_.CT_IMAGE, patient=f"CT{n}") for i in range(118)]
    uid, series = generate_uid(), generate_uid()
    studies[uid] = [image(directory, study_uid=uid, series_uid=series, number=i + 1, rows=1024, modality="DX",
                          sop_class=ds_.DX_IMAGE, patient="DX0") for i in range(3)]
    for n in range(25):
        ds = synthetic.ecg_dataset(60 + n, patient_id=f"ECG{n}")
        studies[ds.StudyInstanceUID] = [synthetic.write(ds, directory, f"ecg-{n}")]
    assert sum(map(len, studies.values())) == 500
    return studies


async def test_500_instances_cross_a_poor_link_and_a_3_minute_outage(centre, link_to, tmp_path: Path):
    proxy: FaultProxy = await link_to(**LINK)
    studies = corpus(tmp_path / "src")
    files = [f for fs in studies.values() for f in fs]
    token = issue_token(centre.rt.consortium, "cg-edge", SECRET)
    edge = YilianProcess(tmp_path / "edge", args=("edge",), YILIAN_CONSORTIUM=str(EXAMPLE_CONSORTIUM),
                         YILIAN_AE_TITLE="CG_EDGE", YILIAN_STUDY_QUIET_SECONDS="1", YILIAN_GATEWAY_INDEXER="inline",
                         YILIAN_EDGE_CENTRE_URL=f"http://127.0.0.1:{proxy.port}", YILIAN_EDGE_TOKEN=token,
                         YILIAN_EDGE_ORGANIZATION="chengguan-thc", YILIAN_EDGE_HEARTBEAT_SECONDS="5")
    edge.start()
    started = time.monotonic()
    try:
        uids = list(studies)
        associations: list[float] = []
        # The first CT goes before the outage; the link drops while it is on its way.
        associations.append(await asyncio.to_thread(storescu, edge.dicom_port, studies[uids[0]]))

        async def part_way() -> bool:
            return await centre.rt.store.count("instances") >= 20
        await wait_for(part_way, timeout=120, what="the centre holding part of the first study")
        proxy.outage(True)
        down_at = time.monotonic()
        for uid in uids[1:]:  # the technician goes on through the outage
            associations.append(await asyncio.to_thread(storescu, edge.dicom_port, studies[uid]))
        held_in_outage = await centre.rt.store.count("instances")
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))  # the outage itself
        assert await centre.rt.store.count("instances") == held_in_outage, "nothing crosses a dead link"
        proxy.outage(False)
        back_at = time.monotonic()

        async def all_arrived() -> bool:
            return await centre.rt.store.count("instances") == len(files)
        await wait_for(all_arrived, timeout=600, what=f"all {len(files)} instances at the centre")
        drained = time.monotonic() - back_at

        async def announced() -> bool:
            return len(await centre.events("study.received")) >= len(studies)
        await wait_for(announced, timeout=60, what="every study announced")
        received = [e["data"]["study_uid"] for e in await centre.events("study.received")]
        assert sorted(received) == sorted(studies), "one study.received per study"
        outcomes = await audit_outcomes(centre)
        assert outcomes.get("new") == len(files), outcomes
        # Local speed: the slowest association (118 CT slices) is answered in seconds.
        assert max(associations) < 30, associations
        assert proxy.cuts > 0, "the link cut connections mid-transfer"
        # Byte-identical: the dataset the centre keeps is the one the modality sent.
        sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}
        checked = 0
        for uid in studies:
            for doc in await centre.rt.store.find("instances", {"study_uid": uid}):
                assert doc["organization"] == "chengguan-thc"
                stored = b"".join([c async for c in centre.rt.blobs.read_chunks(doc["blob_key"])])
                assert ds_.dataset_part(stored) == ds_.dataset_bytes(sent[doc["id"]]), doc["id"]
                checked += 1
        assert checked == len(files)
        print(f"\nedge scale: {len(files)} instances, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB; "
              f"associations max {max(associations):.1f} s; outage {OUTAGE_SECONDS:.0f} s; drained "
              f"{drained:.1f} s after the link came back; total {time.monotonic() - started:.0f} s; "
              f"wire up {proxy.bytes['up'] / 1e6:.1f} MB down {proxy.bytes['down'] / 1e6:.2f} MB; "
              f"{proxy.connections} connections, {proxy.cuts} cut; outcomes {outcomes}")
    finally:
        edge.kill()
