"""Many clinics at once, and a large instance with flat memory."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from ..dicom_samples import STORESCU, make_study, storescu, write_large_multiframe
from .conftest import run

# Eight registered modalities of three townships: one association each.
CLINICS = ["CG_DR1", "CG_US1", "CG_CT1", "CG_ECG1", "DB_DR1", "DB_US1", "DB_ECG1", "HM_DR1"]
PER_CLINIC = 25


async def test_eight_concurrent_associations_store_everything(make_gateway, tmp_path):
    gateway = await make_gateway(study_quiet_seconds=0.5)
    studies = {ae: make_study(tmp_path / ae, series=1, instances=PER_CLINIC, patient_id=ae) for ae in CLINICS}
    # The event loop must stay responsive while pynetdicom's threads ingest: measure its lag.
    lags: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)
    prober = asyncio.create_task(probe())
    started = time.monotonic()
    procs = [await asyncio.create_subprocess_exec(
        STORESCU, "-aet", ae, "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port),
        *map(str, studies[ae].files), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        for ae in CLINICS]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
    elapsed = time.monotonic() - started
    stop.set()
    await prober
    for ae, proc, (out, _) in zip(CLINICS, procs, outputs):
        assert proc.returncode == 0, f"{ae}: {out.decode()}"
    total = len(CLINICS) * PER_CLINIC
    assert await gateway.count("instances") == total
    assert len(await gateway.events("instance.stored")) == total
    for ae, study in studies.items():
        doc = await gateway.rt.store.get("studies", study.study_uid)
        assert doc["instance_count"] == PER_CLINIC and doc["patient_id"] == ae
    assert max(lags) < 0.5, f"event loop blocked for {max(lags):.3f}s"
    print(f"\n8 concurrent storescu: {total} instances in {elapsed:.2f}s ({total / elapsed:.0f}/s), "
          f"max loop lag {max(lags) * 1000:.0f} ms")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def test_large_instance_streams_with_flat_memory(gateway, tmp_path):
    size = 200 * 1024 * 1024
    path = write_large_multiframe(tmp_path / "big.dcm", size)
    baseline = _rss_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        result = await run(storescu, gateway.port, [path], calling="CG_US1", extra=["-R", "-xe"], timeout=120)
    finally:
        done.set()
        sampler.join()
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.output
    growth = peak[0] - baseline
    docs = await gateway.rt.store.find("instances")
    assert len(docs) == 1 and docs[0]["size"] > size and docs[0]["number_of_frames"] == 200
    stored = Path(gateway.rt.blobs.local_path(docs[0]["blob_key"]))
    assert stored.stat().st_size == docs[0]["size"]
    print(f"\n200 MB instance: {elapsed:.2f}s ({size / elapsed / 1e6:.0f} MB/s), peak RSS growth "
          f"{growth / 1e6:.1f} MB")
    assert growth < 40 * 1024 * 1024, f"gateway memory grew {growth / 1e6:.0f} MB for a 200 MB instance"
