"""Index and blobs never disagree: failures keep neither, a crash's leftovers are swept at start."""

from __future__ import annotations

import os
import time

from services.pacs_gateway.ingest import Ingest, sweep_orphans

from ..dicom_samples import make_instance, storescu, write
from ..support import wait_for
from .conftest import CHENGGUAN_CT, run


async def _chunks(data: bytes):
    yield data


def _age(path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


async def test_index_failure_keeps_neither_blob_nor_entry(gateway, tmp_path, monkeypatch):
    async def broken_index(self, prepared, key):
        raise RuntimeError("database went away")
    monkeypatch.setattr(Ingest, "_index", broken_index)
    path = write(make_instance(), tmp_path / "a.dcm")
    result = await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT, extra=["-d"])
    assert "0x0110" in result.output and "processing failure: RuntimeError" in result.output, result.output
    assert await gateway.count("instances") == 0 and await gateway.count("studies") == 0
    assert gateway.blob_files() == [] and gateway.staging_files() == []
    assert await gateway.events("instance.stored") == []


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
