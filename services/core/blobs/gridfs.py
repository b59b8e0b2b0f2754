"""GridFS adapter of the blob store (scale-out): ``gridfs:`` in the MongoStore's database.

Bucket ``blobs``: collections ``blobs.files`` and ``blobs.chunks`` laid out as the GridFS
specification says (filename = key, ``metadata.sha256``), so ``mongofiles`` and any
driver's ``GridFSBucket`` read what this writes.  We speak the layout on the store's
collections instead of using ``gridfs.AsyncGridFSBucket`` because its uploader buffers
up to 48 MB of chunks before inserting them (``_UPLOAD_BUFFER_SIZE``) and its reader's
cursor may fetch 16 MB at once, while a blob here must stream in bounded memory; it also
lets the same code run on mongomock in tests.

Atomicity: the files document is inserted after the last chunk, so a reader never sees a
half-written blob.  Replacing a key uploads a new revision and then deletes the revisions
older than it (files document first, then its chunks); readers open the newest revision
(by ``uploadDate``, then ``_id``), so two racing writers leave the newer blob, never none.
A reader still streaming a revision while it is deleted gets :class:`CorruptBlob`, never
mixed bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING

from .port import CHUNK, BlobInfo, BlobNotFound, BlobStore

BUCKET = "blobs"
CHUNK_SIZE = 255 * 1024  # the GridFS default: a chunk document stays well under 16 MB
BATCH_BYTES = 4 << 20  # chunks fetched or inserted per round trip
_NEWEST_FIRST = [("uploadDate", DESCENDING), ("_id", DESCENDING)]


class CorruptBlob(IOError):
    """A blob's chunks do not add up to its files document (deleted while read, or damaged)."""


def check_key(key: str) -> str:
    """The same keys as the file store, so blobs move between adapters unchanged."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ValueError(f"bad blob key {key!r}")
    return key


def _revision(files_doc: dict[str, Any]) -> tuple[datetime, ObjectId]:
    when = files_doc["uploadDate"]
    if when.tzinfo is not None:  # drivers return naive UTC unless tz_aware; compare alike
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when, files_doc["_id"]


class GridFSBlobStore(BlobStore):
    """Blobs in the database of ``store`` (a :class:`~services.core.store.mongo.MongoStore`)."""

    def __init__(self, url: str, *, store: Any, staging: Path | None = None,
                 chunk_size: int = CHUNK_SIZE) -> None:
        self.url = url
        self._store = store
        self.chunk_size = chunk_size
        data_dir = os.environ.get("YILIAN_DATA_DIR")
        self._staging = staging or (Path(data_dir) / "staging" if data_dir else None)
        self._files: Any = None
        self._chunks: Any = None

    async def open(self) -> None:
        db = getattr(self._store, "db", None)
        if db is None:
            raise ValueError("YILIAN_BLOB_URL=gridfs: needs YILIAN_STORE_URL=mongodb://... "
                             f"(the store is {type(self._store).__name__})")
        self._files, self._chunks = db[f"{BUCKET}.files"], db[f"{BUCKET}.chunks"]
        # The indexes the GridFS specification requires.
        await self._files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
        await self._chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="yilian-staging-"))
        self._staging.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        pass  # the collections live on the store's client, which the store closes

    def staging_dir(self) -> Path:
        if self._staging is None:
            raise RuntimeError("GridFSBlobStore.open() was not called")
        return self._staging

    # --- writes --------------------------------------------------------------------
    async def _upload(self, key: str, chunks: AsyncIterator[bytes], *,
                      expect_sha256: str | None = None) -> BlobInfo:
        check_key(key)
        file_id = ObjectId()
        h, size, n = hashlib.sha256(), 0, 0
        buffer = bytearray()
        batch: list[dict[str, Any]] = []
        per_batch = max(1, BATCH_BYTES // self.chunk_size)

        async def flush(final: bool) -> None:
            nonlocal n, batch
            while len(buffer) >= self.chunk_size or (final and buffer):
                piece = bytes(buffer[:self.chunk_size])
                del buffer[:self.chunk_size]
                batch.append({"_id": ObjectId(), "files_id": file_id, "n": n, "data": piece})
                n += 1
                if len(batch) >= per_batch:
                    await self._chunks.insert_many(batch, ordered=True)
                    batch = []
            if final and batch:
                await self._chunks.insert_many(batch, ordered=True)
                batch = []

        try:
            async for chunk in chunks:
                h.update(chunk)
                size += len(chunk)
                buffer += chunk
                await flush(final=False)
            await flush(final=True)
            digest = h.hexdigest()
            if expect_sha256 is not None and expect_sha256 != digest:
                raise ValueError(f"blob {key}: content sha256 is {digest}, the caller said {expect_sha256}")
            # BSON dates hold milliseconds; truncate so the revision we compare is the one stored.
            now = datetime.now(UTC)
            files_doc = {"_id": file_id, "length": size, "chunkSize": self.chunk_size,
                         "uploadDate": now.replace(microsecond=now.microsecond // 1000 * 1000),
                         "filename": key, "metadata": {"sha256": digest}}
            await self._files.insert_one(files_doc)  # the blob appears here, whole
        except BaseException:
            await asyncio.shield(self._chunks.delete_many({"files_id": file_id}))
            raise
        await self._delete_older(key, files_doc)
        return BlobInfo(key, size, digest)

    async def _delete_older(self, key: str, newest: dict[str, Any]) -> None:
        mark = _revision(newest)
        for old in await self._files.find({"filename": key, "_id": {"$ne": newest["_id"]}}).to_list(None):
            if _revision(old) < mark:
                await self._delete_revision(old["_id"])

    async def _delete_revision(self, file_id: ObjectId) -> bool:
        # Files document first: from then on no reader finds the chunks being removed.
        gone = (await self._files.delete_one({"_id": file_id})).deleted_count == 1
        await self._chunks.delete_many({"files_id": file_id})
        return gone

    async def put_file(self, key: str, path: Path, *, sha256: str | None = None, durable: bool = True) -> BlobInfo:
        # Always durable: the chunks are written with the database's write concern.
        async def read() -> AsyncIterator[bytes]:
            f = await asyncio.to_thread(open, path, "rb")
            try:
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    yield chunk
            finally:
                f.close()
        info = await self._upload(key, read(), expect_sha256=sha256)
        await asyncio.to_thread(path.unlink, missing_ok=True)  # consumed only once stored
        return info

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> BlobInfo:
        return await self._upload(key, chunks)

    # --- reads ---------------------------------------------------------------------
    async def _newest(self, key: str) -> dict[str, Any] | None:
        check_key(key)
        return await self._files.find_one({"filename": key}, sort=_NEWEST_FIRST)

    async def read_chunks(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        files_doc = await self._newest(key)
        if files_doc is None:
            raise BlobNotFound(key)
        per_batch = max(1, BATCH_BYTES // max(1, files_doc.get("chunkSize", self.chunk_size)))
        cursor = self._chunks.find({"files_id": files_doc["_id"]}).sort([("n", ASCENDING)]).batch_size(per_batch)
        expected_n, sent = 0, 0
        buffer = bytearray()
        async for chunk_doc in cursor:
            if chunk_doc["n"] != expected_n:
                raise CorruptBlob(f"blob {key}: chunk {expected_n} missing")
            expected_n += 1
            buffer += chunk_doc["data"]
            while len(buffer) >= chunk_size:
                piece = bytes(buffer[:chunk_size])
                del buffer[:chunk_size]
                sent += len(piece)
                yield piece
        if buffer:
            sent += len(buffer)
            yield bytes(buffer)
        if sent != files_doc["length"]:
            raise CorruptBlob(f"blob {key}: {sent} of {files_doc['length']} bytes (deleted while read?)")

    async def exists(self, key: str) -> bool:
        return await self._newest(key) is not None

    async def delete(self, key: str) -> bool:
        check_key(key)
        deleted = False
        for files_doc in await self._files.find({"filename": key}, {"_id": 1}).to_list(None):
            deleted = await self._delete_revision(files_doc["_id"]) or deleted
        return deleted

    async def keys(self, prefix: str = "") -> AsyncIterator[str]:
        # A prefix names a folder, as in the file store: "1.2.3" lists "1.2.3/...", not "1.2.30/...".
        where = {"filename": {"$regex": "^" + re.escape(prefix.rstrip("/") + "/")}} if prefix else {}
        last = None
        async for files_doc in self._files.find(where, {"filename": 1}).sort([("filename", ASCENDING)]):
            if files_doc["filename"] != last:  # one key, however many revisions
                last = files_doc["filename"]
                yield last
