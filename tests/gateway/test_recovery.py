"""Index and blobs never disagree: failures keep neither, a crash's leftovers are swept at start."""

from __future__ import annotations

import asyncio
import json
import os
import time

from pydicom import dcmread

from services.core.store.port import StoreUnavailable
from services.pacs_gateway.ingest import Ingest, sweep_orphans

from ..dicom_samples import STORESCU, make_instance, storescu, write
from ..support import wait_for
from .conftest import CHENGGUAN_CT, run


async def _chunks(data: bytes):
    yield data


def _age(path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


async def test_store_failure_before_the_answer_keeps_nothing_even_after_a_restart(make_gateway, tmp_path, monkeypatch):
    gateway = await make_gateway(name="node")
    store = gateway.rt.store
    real_get = type(store).get

    async def broken_get(self, collection, id):
        if collection == "instances":
            raise RuntimeError("database went away")
        return await real_get(self, collection, id)
    real_get_now = type(store).get_now

    def broken_get_now(self, collection, id):  # the read before the answer (embedded store)
        if collection == "instances":
            raise RuntimeError("database went away")
        return real_get_now(self, collection, id)
    monkeypatch.setattr(type(store), "get", broken_get)
    monkeypatch.setattr(type(store), "get_now", broken_get_now)
    path = write(make_instance(), tmp_path / "a.dcm")
    result = await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT, extra=["-d"])
    assert "0x0110" in result.output and "processing failure: RuntimeError" in result.output, result.output
    monkeypatch.undo()
    assert await gateway.count("instances") == 0 and await gateway.count("studies") == 0
    assert gateway.blob_files() == [] and gateway.staging_files() == []
    # The journal noted the record as abandoned: a restart does not index it after all.
    await gateway.service.stop()
    again = await make_gateway(name="node")
    assert await again.count("instances") == 0 and again.blob_files() == []
    assert await again.events("instance.stored") == []


async def test_index_failure_after_the_answer_is_retried_until_the_store_is_back(gateway, tmp_path, monkeypatch):
    failures = []
    real = Ingest.index_batch

    async def flaky(self, batch):
        if len(failures) < 3:
            failures.append(len(batch))
            raise StoreUnavailable("database went away")
        return await real(self, batch)
    monkeypatch.setattr(Ingest, "index_batch", flaky)
    path = write(make_instance(), tmp_path / "a.dcm")
    result = await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output  # answered once durable in the journal
    assert await gateway.count("instances") == 1 and len(failures) == 3  # count() waits for the indexer
    assert len(gateway.blob_files()) == 1 and len(await gateway.events("instance.stored")) == 1


async def test_sweep_removes_what_a_crash_left_and_keeps_the_rest(gateway, tmp_path):
    path = write(make_instance(), tmp_path / "kept.dcm")
    assert (await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT)).returncode == 0
    blobs = gateway.rt.blobs
    # A crash after the blob's rename and before the index commit leaves an unreferenced blob.
    await blobs.put_stream("1.2.3/1.2.3.4/1.2.3.4.5.0123456789abcdef.dcm", _chunks(b"orphan"))
    await blobs.put_stream("1.2.3/1.2.3.4/1.2.3.4.6.0123456789abcdef.dcm", _chunks(b"in flight"))
    staged = blobs.staging_dir() / "tmpabc.dcm"  # a C-STORE interrupted mid-stream
    staged.write_bytes(b"partial")
    _age(blobs.local_path("1.2.3/1.2.3.4/1.2.3.4.5.0123456789abcdef.dcm"), 3600)
    _age(staged, 3600)
    [doc] = await gateway.rt.store.find("instances")
    _age(blobs.local_path(doc["blob_key"]), 3600)  # referenced files stay however old they are
    assert await sweep_orphans(gateway.rt) == 2
    assert not await blobs.exists("1.2.3/1.2.3.4/1.2.3.4.5.0123456789abcdef.dcm")
    assert await blobs.exists("1.2.3/1.2.3.4/1.2.3.4.6.0123456789abcdef.dcm")  # young: may be in flight
    assert not staged.exists()
    assert await blobs.exists(doc["blob_key"])


async def test_a_restarted_gateway_sweeps_at_start(make_gateway):
    first = await make_gateway(name="node")
    blobs = first.rt.blobs
    await blobs.put_stream("9.8/9.8.7/9.8.7.6.0123456789abcdef.dcm", _chunks(b"orphan"))
    _age(blobs.local_path("9.8/9.8.7/9.8.7.6.0123456789abcdef.dcm"), 3600)
    await first.service.stop()
    second = await make_gateway(name="node")

    async def swept() -> bool:
        return not await second.rt.blobs.exists("9.8/9.8.7/9.8.7.6.0123456789abcdef.dcm")
    await wait_for(swept, what="orphan swept at start")


async def test_a_full_disk_under_the_journal_gets_out_of_resources_and_the_next_instance_is_kept(gateway, tmp_path,
                                                                                                monkeypatch):
    import errno

    from services.pacs_gateway import journal

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(journal.os, "pwritev", full)
    first = write(make_instance(), tmp_path / "a.dcm")
    result = await run(storescu, gateway.port, [first], calling=CHENGGUAN_CT, extra=["-d"])
    assert "0xa700" in result.output.lower() and "storage full" in result.output, result.output
    monkeypatch.undo()
    second = write(make_instance(), tmp_path / "b.dcm")
    assert (await run(storescu, gateway.port, [second], calling=CHENGGUAN_CT)).returncode == 0
    assert await gateway.count("instances") == 1 and len(gateway.blob_files()) == 1


async def test_an_instance_the_index_cannot_take_is_quarantined_and_the_others_are_indexed(gateway, tmp_path,
                                                                                           monkeypatch):
    study = [make_instance(study_uid="1.2.826.0.1.3680043.8.498.77", patient_id="Q1") for _ in range(3)]
    poison = str(study[1].SOPInstanceUID)
    real = Ingest._decide

    def decide(self, p, *args, **kwargs):
        if p.header.sop_instance_uid == poison:
            raise ValueError("an index document this instance cannot make")
        return real(self, p, *args, **kwargs)
    monkeypatch.setattr(Ingest, "_decide", decide)
    paths = [write(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(study)]
    result = await run(storescu, gateway.port, paths, calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output  # all three were durable when answered
    assert await gateway.count("instances") == 2  # the other two are indexed, not held up
    assert await gateway.rt.store.get("instances", poison) is None
    kept = list((gateway.data_dir / "quarantine").rglob("*.dcm"))
    assert [p.name.split(".")[:-2] == poison.split(".") for p in kept] == [True]
    assert dcmread(kept[0]).SOPInstanceUID == poison
    reason = json.loads((kept[0].parent / (kept[0].name[:-4] + ".json")).read_text())
    assert "cannot make" in reason["error"] and reason["calling_ae"] == CHENGGUAN_CT
    from services.core.metrics import metrics_of
    figures = {s.name: s.value for f in await metrics_of(gateway.rt).families() for s in f.samples}
    assert figures["yilian_gateway_quarantined_total"] == 1 and figures["yilian_gateway_unindexed_instances"] == 0
    # The journal does not hold it any more: a restart does not try again.
    monkeypatch.undo()
    await gateway.service.stop()
    assert not list((gateway.data_dir / "journal" / "gateway-0").glob("*.wal"))


async def test_an_instance_found_in_another_series_only_when_indexed_is_quarantined_not_dropped(gateway, tmp_path,
                                                                                                monkeypatch):
    # Two receiving processes each acknowledged a copy of one SOP Instance UID, in two series,
    # before either was indexed: neither saw the other's copy waiting. Here one process plays
    # both: it does not see its own backlog, and indexing waits until both are acknowledged.
    study_uid, uid = "1.2.826.0.1.3680043.8.498.78", "1.2.826.0.1.3680043.8.498.78.1.1"
    first = make_instance(study_uid=study_uid, series_uid=study_uid + ".1", sop_instance_uid=uid)
    second = make_instance(study_uid=study_uid, series_uid=study_uid + ".2", sop_instance_uid=uid, pixel_value=9)
    monkeypatch.setattr(gateway.service.ingest.indexer, "waiting", lambda sop_instance_uid: None)
    both_answered = asyncio.Event()
    real = Ingest.index_batch

    async def held(self, batch):
        await both_answered.wait()
        return await real(self, batch)
    monkeypatch.setattr(Ingest, "index_batch", held)
    paths = [write(first, tmp_path / "first.dcm"), write(second, tmp_path / "second.dcm")]
    # DCMTK storescu itself: the test helper would wait for the indexing this test holds back.
    sender = await asyncio.create_subprocess_exec(
        STORESCU, "-aet", CHENGGUAN_CT, "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port), *map(str, paths),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(sender.communicate(), 30)
    assert sender.returncode == 0, output.decode()  # both durable when answered
    both_answered.set()

    async def settled() -> bool:
        return (await gateway.count("instances") == 1
                and len(list((gateway.data_dir / "quarantine").rglob("*.dcm"))) == 1)
    await wait_for(settled, timeout=10, what="one copy indexed, the other in quarantine")
    assert (await gateway.rt.store.get("instances", uid))["series_uid"] == study_uid + ".1"
    kept = next((gateway.data_dir / "quarantine").rglob("*.dcm"))
    assert dcmread(kept).SeriesInstanceUID == study_uid + ".2"
    reason = json.loads((kept.parent / (kept.name[:-4] + ".json")).read_text())
    assert "another series" in reason["error"] and reason["calling_ae"] == CHENGGUAN_CT
    assert len(await gateway.events("instance.stored")) == 1


async def test_large_instances_acknowledged_while_the_store_was_away_are_indexed_after_a_restart(make_gateway,
                                                                                                  tmp_path, monkeypatch):
    from services.pacs_gateway import indexer

    from .. import dicom_samples

    # Over 256 bytes an instance streams to a staging file, which the journal record names.
    first = await make_gateway(name="node", gateway_inline_bytes=256)
    monkeypatch.setattr(dicom_samples, "AFTER_STORE", [])  # storescu must not wait for an indexer that cannot

    async def away(self, batch):
        raise StoreUnavailable("database went away")
    monkeypatch.setattr(Ingest, "index_batch", away)
    monkeypatch.setattr(indexer, "STOP_WAIT", 0.5)
    study = [make_instance(study_uid="1.2.826.0.1.3680043.8.498.78") for _ in range(3)]
    paths = [write(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(study)]
    result = await asyncio.to_thread(storescu, first.port, paths, calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output
    assert await first.rt.store.count("instances") == 0
    staged = [p for p in first.staging_files() if p.name.startswith("journal-")]
    assert len(staged) == 3  # durable, named by the journal, not swept as orphans
    await first.service.stop()  # the store is still away: stops after STOP_WAIT, journal kept
    monkeypatch.undo()
    again = await make_gateway(name="node", gateway_inline_bytes=256)
    assert await again.count("instances") == 3
    for ds, path in zip(study, paths):
        doc = await again.rt.store.get("instances", str(ds.SOPInstanceUID))
        assert dcmread(again.rt.blobs.local_path(doc["blob_key"])).PixelData == ds.PixelData
    assert not [p for p in again.staging_files() if p.name.startswith("journal-")]
    assert len(await again.events("instance.stored")) == 3


async def test_a_large_instance_is_indexed_once_the_store_is_back_even_after_its_blob_was_written(make_gateway,
                                                                                                   tmp_path,
                                                                                                   monkeypatch):
    from services.core.store.sqlite import SqliteStore

    from .. import dicom_samples

    # Over 256 bytes an instance streams to a staging file; the blob store takes that file.
    gateway = await make_gateway(name="node", gateway_inline_bytes=256)
    monkeypatch.setattr(dicom_samples, "AFTER_STORE", [])  # storescu must not wait for the indexer
    real, refusals = SqliteStore.apply, []

    async def away_twice(self, reads, decide, **kwargs):
        if kwargs.get("durable") is False and len(refusals) < 2:  # the indexer's transaction
            refusals.append(1)
            raise StoreUnavailable("database went away")
        return await real(self, reads, decide, **kwargs)
    monkeypatch.setattr(SqliteStore, "apply", away_twice)
    ds = make_instance()
    result = await asyncio.to_thread(storescu, gateway.port, [write(ds, tmp_path / "a.dcm")], calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output

    # The blob was written before the index failed; the retry must not look for the staging file.
    async def indexed() -> bool:
        return await gateway.count("instances") == 1
    await wait_for(indexed, timeout=15, what="indexed once the store is back, without a restart")
    assert len(refusals) == 2
    doc = await gateway.rt.store.get("instances", str(ds.SOPInstanceUID))
    assert dcmread(gateway.rt.blobs.local_path(doc["blob_key"])).PixelData == ds.PixelData
    assert len(await gateway.events("instance.stored")) == 1


async def test_a_large_instance_the_index_cannot_take_is_quarantined_with_its_bytes(make_gateway, tmp_path,
                                                                                    monkeypatch):
    gateway = await make_gateway(name="node", gateway_inline_bytes=256)
    ds = make_instance()

    def decide(self, p, *args, **kwargs):
        raise ValueError("an index document this instance cannot make")
    monkeypatch.setattr(Ingest, "_decide", decide)
    result = await run(storescu, gateway.port, [write(ds, tmp_path / "a.dcm")], calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output
    # The batch attempt moved the staging file into the blob store before the index refused it:
    # the quarantine still gets the whole instance.
    kept = list((gateway.data_dir / "quarantine").rglob("*.dcm"))
    assert len(kept) == 1 and dcmread(kept[0]).PixelData == ds.PixelData
    assert await gateway.rt.store.get("instances", str(ds.SOPInstanceUID)) is None


async def test_a_full_disk_while_indexing_is_waited_out_not_quarantined(gateway, tmp_path, monkeypatch):
    import errno

    from services.core.blobs.files import FileBlobStore
    real = FileBlobStore._put_bytes
    refused = []

    def full_twice(self, *args):
        if len(refused) < 2:
            refused.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args)
    monkeypatch.setattr(FileBlobStore, "_put_bytes", full_twice)
    path = write(make_instance(), tmp_path / "a.dcm")
    assert (await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT)).returncode == 0
    assert await gateway.count("instances") == 1 and len(refused) == 2
    assert not (gateway.data_dir / "quarantine").exists()
