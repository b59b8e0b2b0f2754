"""The ingest journal: records come back after a crash exactly as acknowledged, nothing more."""

from __future__ import annotations

import asyncio
import hashlib
import os

from services.pacs_gateway.journal import SPARE, Journal

from ..dicom_samples import make_study, storescu
from .conftest import CHENGGUAN_CT, run


def _record(n: int) -> tuple[dict, bytes]:
    body = os.urandom(1000 + n)
    return {"n": n, "sha256": hashlib.sha256(body).hexdigest()}, body


async def _written(journal: Journal, count: int, start: int = 0) -> list[bytes]:
    bodies = []
    for n in range(start, start + count):
        meta, body = _record(n)
        w = await journal.append(meta, [body[:10], memoryview(body)[10:]])
        bodies.append(body)
        await journal.durable(w.position)
    return bodies


async def test_replay_returns_the_durable_records_and_stops_at_a_torn_one(tmp_path):
    journal = Journal(tmp_path / "j", segment_bytes=1 << 20)
    journal.open()
    bodies = await _written(journal, 5)
    # A crash mid-write: half a record after the last durable one.
    meta, body = _record(99)
    torn = await journal.append(meta, [body])
    with open(tmp_path / "j" / f"{torn.segment:012d}.wal", "rb+") as f:
        f.truncate(torn.end - 500)
    replayed = list(Journal(tmp_path / "j").replay())
    assert [r.meta["n"] for r in replayed] == [0, 1, 2, 3, 4]
    assert [r.body for r in replayed] == bodies
    await journal.close()


async def test_a_recycled_segment_never_replays_its_previous_records(tmp_path):
    directory = tmp_path / "j"
    journal = Journal(directory, segment_bytes=64 << 10)  # small: several segments
    journal.open()
    await _written(journal, 200)
    for segment in list(journal._open_records):  # everything indexed
        journal._open_records[segment] = 0

    async def synced() -> None:
        pass
    assert await journal.retire(synced) >= 2
    assert (directory / SPARE).exists()  # a retired segment became the spare, its old records still in it
    still_there = {r.meta["n"] for r in Journal(directory).replay()}  # the open segment's
    await _written(journal, 300, start=1000)  # rolls into the recycled file, then on
    assert not (directory / SPARE).exists() or len(journal.segments()) > 2
    replayed = [r.meta["n"] for r in Journal(directory).replay()]
    assert [n for n in replayed if n >= 1000] == list(range(1000, 1300))
    assert {n for n in replayed if n < 1000} <= still_there  # nothing stale from a recycled file
    await journal.close()


async def test_segments_roll_and_are_recycled_while_a_study_streams_in(make_gateway, tmp_path):
    gateway = await make_gateway(gateway_journal_segment_bytes=256 << 10)
    study = make_study(tmp_path, series=2, instances=30)
    result = await run(storescu, gateway.port, study.files, calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output
    assert await gateway.count("instances") == 60 and len(gateway.blob_files()) == 60
    directory = gateway.data_dir / "journal" / "gateway-0"

    async def retired() -> bool:
        return len(list(directory.glob("*.wal"))) <= 3
    for _ in range(200):
        if await retired():
            break
        await asyncio.sleep(0.05)
    assert await retired(), sorted(p.name for p in directory.iterdir())
    await gateway.service.stop()  # a clean stop leaves nothing to replay
    assert not list(directory.glob("*.wal"))


async def test_an_acknowledged_instance_is_indexed_moments_after_its_answer(gateway, tmp_path):
    from ..dicom_samples import make_instance, write
    from .test_ingest import pynetdicom_store
    ds = make_instance()
    path = write(ds, tmp_path / "one.dcm")
    status = await run(pynetdicom_store, gateway.port, path)  # no test hook: just the DICOM answer
    assert status.Status == 0x0000
    answered = asyncio.get_running_loop().time()
    while await gateway.rt.store.get("instances", str(ds.SOPInstanceUID)) is None:
        assert asyncio.get_running_loop().time() - answered < 2.0, "not indexed 2 s after its C-STORE-RSP"
        await asyncio.sleep(0.005)
    assert await gateway.rt.blobs.exists((await gateway.rt.store.get("instances", str(ds.SOPInstanceUID)))["blob_key"])
