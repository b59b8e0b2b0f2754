"""YILIAN_GATEWAY_INDEXER=process: receiving processes journal and answer, one indexer process indexes."""

from __future__ import annotations

import asyncio
import os
import signal

from services.pacs_gateway.index_process import IndexClient

from ..dicom_samples import STORESCU, make_study
from ..support import wait_for
from .conftest import CHENGGUAN_CT
from .test_load import CLINICS
from .test_workers import _cpu_ticks


async def _send(gateway, calling: str, files) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        STORESCU, "-aet", calling, "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *map(str, files),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def test_workers_receive_and_the_indexer_process_indexes(make_gateway, tmp_path):
    gateway = await make_gateway(gateway_workers=2, gateway_indexer="process", study_quiet_seconds=0.5)
    indexer = gateway.service.index_process.process
    assert indexer.is_alive() and indexer.pid != os.getpid()
    assert isinstance(gateway.service.ingest.indexer, IndexClient)
    ticks = _cpu_ticks(indexer.pid)
    studies = {ae: make_study(tmp_path / ae, instances=8, patient_id=ae) for ae in CLINICS}
    procs = [await _send(gateway, ae, studies[ae].files) for ae in CLINICS]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
    for ae, proc, (out, _) in zip(CLINICS, procs, outputs):
        assert proc.returncode == 0, f"{ae}: {out.decode()}"
    total = len(CLINICS) * 8
    # count() waits until the indexer process acknowledged everything this process forwarded;
    # the worker's share is indexed by the same process moments later.
    async def all_indexed() -> bool:
        return await gateway.count("instances") == total
    await wait_for(all_indexed, timeout=20, what="every instance indexed by the indexer process")
    assert len(await gateway.events("instance.stored")) == total
    assert len(gateway.blob_files()) == total
    assert _cpu_ticks(indexer.pid) - ticks > 2, "the indexer process did not do the indexing"

    async def all_announced() -> bool:
        return len(await gateway.events("study.received")) == len(CLINICS)
    await wait_for(all_announced, timeout=20, what="one study.received per study")
    # A clean stop: the indexer process goes last, and no journal is left to replay.
    await gateway.service.stop()
    assert not indexer.is_alive()
    assert not list((gateway.data_dir / "journal").rglob("*.wal"))


async def test_an_indexer_process_killed_mid_burst_loses_nothing(make_gateway, tmp_path):
    gateway = await make_gateway(gateway_indexer="process")
    handle = gateway.service.index_process
    first = handle.process
    study = make_study(tmp_path / "burst", instances=300, patient_id="BURST")  # a burst that outlasts the kill
    proc = await _send(gateway, CHENGGUAN_CT, study.files)

    async def some_indexed() -> bool:
        return await gateway.rt.store.count("instances") >= 10
    await wait_for(some_indexed, timeout=30, interval=0.01, what="indexing under way")
    os.kill(first.pid, signal.SIGKILL)

    async def answered_while_down() -> bool:  # acknowledged (journaled) with no indexer process to take them
        return gateway.service.ingest.indexer.stats()["waiting"] > 0
    await wait_for(answered_while_down, timeout=30, interval=0.005, what="C-STOREs answered while the indexer is down")
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()  # C-STOREs kept being answered: the journal has them

    async def restarted() -> bool:
        return handle.process is not first and handle.process.is_alive()
    await wait_for(restarted, timeout=30, what="a new indexer process")
    await asyncio.wait_for(gateway.service.ingest.settled(), 30)  # everything forwarded again and acknowledged
    assert await gateway.count("instances") == 300
    # Records the dead process had indexed but not acknowledged came again: recognised, not doubled.
    assert len(await gateway.events("instance.stored")) == 300
    assert len(gateway.blob_files()) == 300
