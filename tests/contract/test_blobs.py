"""The blob store port's contract: every adapter in BLOB_ADAPTERS must pass all of it."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from services.core.blobs.port import BlobNotFound

from .adapters import BLOB_ADAPTERS, IN_MEMORY_BLOB_ADAPTERS

MiB = 1 << 20


@pytest.fixture(params=sorted(BLOB_ADAPTERS))
async def blobs(request, tmp_path):
    async with BLOB_ADAPTERS[request.param](tmp_path) as b:
        b.adapter_name = request.param
        yield b


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_put_file_from_staging_is_consumed_and_reads_back(blobs):
    data = os.urandom(3 * MiB + 17)
    path = blobs.staging_dir() / "incoming.dcm"
    path.write_bytes(data)
    info = await blobs.put_file("1.2.3/1.2.3.4/1.2.3.4.5.dcm", path)
    assert (info.key, info.size, info.sha256) == ("1.2.3/1.2.3.4/1.2.3.4.5.dcm", len(data), sha(data))
    assert not path.exists()
    assert await blobs.exists("1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    assert await blobs.read("1.2.3/1.2.3.4/1.2.3.4.5.dcm") == data


async def test_put_file_from_elsewhere(blobs, tmp_path):
    data = b"DICM" * 1000
    path = tmp_path / "elsewhere.dcm"
    path.write_bytes(data)
    info = await blobs.put_file("s/x.dcm", path, sha256=sha(data))
    assert info.size == len(data) and info.sha256 == sha(data)
    assert await blobs.read("s/x.dcm") == data


async def test_put_stream_and_read_in_chunks(blobs):
    parts = [os.urandom(n) for n in (1, 1000, 300_000, 70_000)]
    data = b"".join(parts)
    info = await blobs.put_stream("s/y.dcm", stream(*parts))
    assert info.size == len(data) and info.sha256 == sha(data)
    chunks = [c async for c in blobs.read_chunks("s/y.dcm", chunk_size=4096)]
    assert all(0 < len(c) <= 4096 for c in chunks)
    assert b"".join(chunks) == data


async def test_empty_blob(blobs):
    info = await blobs.put_stream("s/empty", stream())
    assert info.size == 0 and info.sha256 == sha(b"")
    assert await blobs.exists("s/empty")
    assert await blobs.read("s/empty") == b""


async def test_replace_keeps_one_key_with_the_new_bytes(blobs):
    await blobs.put_stream("s/r.dcm", stream(b"old" * 100_000))
    await blobs.put_stream("s/r.dcm", stream(b"new"))
    assert await blobs.read("s/r.dcm") == b"new"
    assert [k async for k in blobs.keys("s")] == ["s/r.dcm"]


async def test_failed_stream_loses_nothing(blobs):
    await blobs.put_stream("s/f.dcm", stream(b"kept"))

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 600_000
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        await blobs.put_stream("s/f.dcm", broken())
    with pytest.raises(ConnectionResetError):
        await blobs.put_stream("s/new.dcm", broken())
    assert await blobs.read("s/f.dcm") == b"kept"
    assert not await blobs.exists("s/new.dcm")
    assert sorted([k async for k in blobs.keys()]) == ["s/f.dcm"]


async def test_delete(blobs):
    await blobs.put_stream("s/d.dcm", stream(b"d"))
    assert await blobs.delete("s/d.dcm")
    assert not await blobs.delete("s/d.dcm")
    assert not await blobs.exists("s/d.dcm")
    with pytest.raises(BlobNotFound):
        await blobs.read("s/d.dcm")


async def test_keys_under_a_prefix(blobs):
    for key in ("1.2.3/4/a.dcm", "1.2.3/4/b.dcm", "1.2.3/5/c.dcm", "1.2.30/x/d.dcm", "9/z.dcm"):
        await blobs.put_stream(key, stream(key.encode()))
    assert sorted([k async for k in blobs.keys("1.2.3")]) == ["1.2.3/4/a.dcm", "1.2.3/4/b.dcm", "1.2.3/5/c.dcm"]
    assert sorted([k async for k in blobs.keys("1.2.3/4/")]) == ["1.2.3/4/a.dcm", "1.2.3/4/b.dcm"]
    assert len([k async for k in blobs.keys()]) == 5
    assert [k async for k in blobs.keys("nothing")] == []


async def test_missing_key_raises_blob_not_found(blobs):
    assert not await blobs.exists("no/such.dcm")
    with pytest.raises(BlobNotFound):
        await blobs.read("no/such.dcm")
    with pytest.raises(BlobNotFound):
        async for _ in blobs.read_chunks("no/such.dcm"):
            pass
    assert not await blobs.delete("no/such.dcm")


@pytest.mark.parametrize("key", ["", "a//b", "../etc/passwd", "a/./b", ".hidden/x"])
async def test_bad_keys_are_refused(blobs, key):
    with pytest.raises(ValueError):
        await blobs.put_stream(key, stream(b"x"))


async def test_50_mib_blob_streams_in_bounded_memory(blobs):
    size = 50 * MiB
    block = os.urandom(MiB)  # reused: the source itself allocates nothing
    expected = hashlib.sha256()
    for _ in range(size // MiB):
        expected.update(block)

    async def source() -> AsyncIterator[bytes]:
        for _ in range(size // MiB):
            yield block

    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        info = await blobs.put_stream("big/50mib.bin", source())
        after_put, peak_put = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        h, total = hashlib.sha256(), 0
        async for chunk in blobs.read_chunks("big/50mib.bin"):
            h.update(chunk)
            total += len(chunk)
        after_read, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == size and info.sha256 == expected.hexdigest()
    assert total == size and h.hexdigest() == expected.hexdigest()
    # Working memory beyond what the store keeps must stay a few chunks, not the blob.
    limit = 10 * MiB
    assert peak_put - after_put < limit, f"upload peaked {(peak_put - after_put) / MiB:.1f} MiB above retained"
    assert peak_read - after_put < limit, f"download peaked {(peak_read - after_put) / MiB:.1f} MiB"
    if blobs.adapter_name not in IN_MEMORY_BLOB_ADAPTERS:
        assert peak_put - start < limit, f"upload peaked {(peak_put - start) / MiB:.1f} MiB"
    print(f"\n{blobs.adapter_name}: 50 MiB put peak +{(peak_put - start) / MiB:.1f} MiB "
          f"(retained {(after_put - start) / MiB:.1f}), read peak +{(peak_read - after_put) / MiB:.1f} MiB")


async def test_put_bytes_not_yet_durable_is_visible_and_sync_makes_it_durable(blobs):
    parts = [b"\x00" * 128 + b"DICM", os.urandom(40_000), os.urandom(3)]
    data = b"".join(parts)
    # durable=False: the caller (the gateway's journal) keeps the bytes until sync().
    info = await blobs.put_bytes("s/z/1.dcm", [memoryview(p) for p in parts], sha256=sha(data), durable=False)
    assert (info.size, info.sha256) == (len(data), sha(data))
    assert await blobs.read("s/z/1.dcm") == data  # visible at once
    await blobs.put_bytes("s/z/1.dcm", [data], sha256=sha(data))  # the same key again: replaced, not doubled
    await blobs.sync()
    assert await blobs.read("s/z/1.dcm") == data
    assert [k async for k in blobs.keys("s/z")] == ["s/z/1.dcm"]
    assert not [p for p in blobs.staging_dir().iterdir()]  # nothing left in staging


async def test_put_many_writes_every_file_whole_however_it_is_cut(blobs):
    # More parts than one writev takes (IOV_MAX = 1024), empty parts, and enough files to go
    # through the writer threads side by side.
    many = [os.urandom(7) for _ in range(2500)] + [b""]
    items = [(f"s/m/{n}.dcm", many if n == 0 else [os.urandom(1000 + n), b"", memoryview(os.urandom(5))],)
             for n in range(12)]
    items = [(key, parts, sha(b"".join(parts))) for key, parts in items]
    await blobs.put_many(items, durable=False)
    await blobs.sync()
    for key, parts, _ in items:
        assert await blobs.read(key) == b"".join(parts), key
    assert sorted([k async for k in blobs.keys("s/m")]) == sorted(key for key, _, _ in items)
    assert not [p for p in blobs.staging_dir().iterdir()]
