"""GridFSBlobStore specifics: the GridFS layout, revisions, and refusing bad input."""

from __future__ import annotations

import asyncio
import hashlib
import os

import gridfs
import pytest
from mongomock_motor import AsyncMongoMockClient, enabled_gridfs_integration

from services.core.blobs.gridfs import BUCKET, CorruptBlob, GridFSBlobStore
from services.core.events import registry
from services.core.runtime import make_blobs
from services.core.store.mongo import MongoStore
from services.core.store.sqlite import SqliteStore


@pytest.fixture
async def store():
    s = MongoStore("mongodb://mongomock/blobs", validate=registry().validate, client=AsyncMongoMockClient())
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def blobs(store, tmp_path):
    b = GridFSBlobStore("gridfs:", store=store, staging=tmp_path / "staging", chunk_size=64 * 1024)
    await b.open()
    yield b
    await b.close()


async def stream(*parts: bytes):
    for part in parts:
        await asyncio.sleep(0)  # let concurrent writers interleave (mongomock never suspends)
        yield part


async def test_layout_is_gridfs_and_pymongo_gridfs_reads_it(blobs, store):
    data = os.urandom(200_000)
    await blobs.put_stream("1.2/3.dcm", stream(data[:1], data[1:150_000], data[150_000:]))
    files = await store.db[f"{BUCKET}.files"].find({}).to_list(None)
    assert len(files) == 1
    f = files[0]
    assert (f["filename"], f["length"], f["chunkSize"]) == ("1.2/3.dcm", len(data), 64 * 1024)
    assert f["metadata"] == {"sha256": hashlib.sha256(data).hexdigest()}
    chunks = await store.db[f"{BUCKET}.chunks"].find({}).sort("n", 1).to_list(None)
    assert [c["n"] for c in chunks] == [0, 1, 2, 3]
    assert all(len(c["data"]) == 64 * 1024 for c in chunks[:-1])
    # PyMongo's own GridFS reader (sync API over the same mongomock database) agrees.
    with enabled_gridfs_integration():
        bucket = gridfs.GridFSBucket(store.db.delegate, bucket_name=BUCKET)
        assert bucket.open_download_stream_by_name("1.2/3.dcm").read() == data


async def test_wrong_sha256_is_refused_and_the_file_kept(blobs, store, tmp_path):
    path = tmp_path / "in.dcm"
    path.write_bytes(b"DICM" * 50_000)
    with pytest.raises(ValueError, match="sha256"):
        await blobs.put_file("k/x.dcm", path, sha256="0" * 64)
    assert path.exists()
    assert not await blobs.exists("k/x.dcm")
    assert await store.db[f"{BUCKET}.chunks"].count_documents({}) == 0


async def test_racing_replacements_leave_a_whole_newest_blob(blobs, store):
    payloads = [bytes([i]) * (100_000 + i) for i in range(6)]
    await asyncio.gather(*(blobs.put_stream("race/x.dcm", stream(p[:50_000], p[50_000:])) for p in payloads))
    got = await blobs.read("race/x.dcm")
    assert got in payloads  # one writer's bytes, never a mix
    newest = await store.db[f"{BUCKET}.files"].find_one({"filename": "race/x.dcm"},
                                                        sort=[("uploadDate", -1), ("_id", -1)])
    assert newest["length"] == len(got)
    await blobs.put_stream("race/x.dcm", stream(b"final"))
    assert await store.db[f"{BUCKET}.files"].count_documents({"filename": "race/x.dcm"}) == 1
    assert await blobs.read("race/x.dcm") == b"final"
    # no orphaned chunks from the replaced revisions
    assert await store.db[f"{BUCKET}.chunks"].count_documents({}) == 1


async def test_missing_chunks_are_reported_not_returned(blobs, store):
    await blobs.put_stream("c/x.dcm", stream(os.urandom(200_000)))
    await store.db[f"{BUCKET}.chunks"].delete_one({"n": 1})
    with pytest.raises(CorruptBlob):
        await blobs.read("c/x.dcm")
    await store.db[f"{BUCKET}.chunks"].delete_many({"n": {"$gte": 2}})
    with pytest.raises(CorruptBlob):
        await blobs.read("c/x.dcm")  # a truncated blob is as wrong as a holed one


async def test_gridfs_needs_the_mongo_store(tmp_path):
    sqlite = SqliteStore(f"sqlite:///{tmp_path / 'y.db'}")
    blobs = make_blobs("gridfs:", sqlite)
    assert isinstance(blobs, GridFSBlobStore)
    with pytest.raises(ValueError, match="mongodb://"):
        await blobs.open()


async def test_staging_dir_defaults_under_the_data_dir(store, tmp_path, monkeypatch):
    monkeypatch.setenv("YILIAN_DATA_DIR", str(tmp_path / "var"))
    blobs = GridFSBlobStore("gridfs:", store=store)
    await blobs.open()
    assert blobs.staging_dir() == tmp_path / "var" / "staging" and blobs.staging_dir().is_dir()
