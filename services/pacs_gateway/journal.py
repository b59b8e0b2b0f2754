"""The ingest journal: a C-STORE is acknowledged once its record is on disk, with one fsync.

A record holds what indexing the instance needs (its parsed header, the calling AE and its
organisation, the digest) and either the instance's Part 10 bytes or the name of a staging
file already fsynced (large instances).  Records are appended to segment files; one
``fdatasync`` makes every record written so far durable, so associations arriving together
share it (group commit).  That is the only fsync before a C-STORE-RSP: the blob file and
the index are written right after it, visible before the response, but without fsyncs of
their own.

Segments are written into files whose blocks already exist (zero-filled ahead of time on a
thread, or recycled from a retired segment): the fdatasync then flushes data only, without a
filesystem-journal commit — three times cheaper here, and it stops stalling the creation of
blob files on other threads.  Until a prepared file is ready (just after start) records are
appended to a fresh file.

A segment is retired only once it is full, every record in it has been indexed, and the blob
store and the store have been synced.  After a crash, :meth:`Journal.replay` yields the
records of the segments still on disk and the gateway indexes them again (identical instances
are recognised and skipped), so nothing acknowledged is lost and nothing is indexed twice.  A
record cut short by the crash was never acknowledged; replay stops there.

Layout (little endian).  Segment: ``b"YJS1"``, segment id (random u64), 4 bytes padding;
then records.  Record: ``b"YJR1"``, the segment id, meta length (u32), body length (u64), crc32
of the meta (u32); the meta (UTF-8 JSON); the body, whose sha256 is in the meta.  The segment
id in every record tells this use of a recycled file from the stale records of its last one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.fsync import fsync_path

log = logging.getLogger("yilian.pacs_gateway.journal")

SEGMENT_MAGIC, RECORD_MAGIC = b"YJS1", b"YJR1"
SEGMENT_HEAD = struct.Struct("<4sQ4x")
HEAD = struct.Struct("<4sQIQI")
SUFFIX = ".wal"
SPARE = "spare.seg"  # a zero-filled or recycled file, ready to become the next segment
ZEROS = bytes(1 << 20)
Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Record:
    meta: dict[str, Any]
    body: bytes  # the Part 10 file, or b"" when meta["staged"] names a staging file
    segment: int  # the segment's number
    end: int  # offset just after the record in its segment


@dataclass(frozen=True, slots=True)
class Written:
    segment: int
    end: int  # offset just after the record in its segment: with ``segment``, the record's identity
    position: int  # what :meth:`Journal.durable` waits for


def encode_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()


def read_segment(path: Path) -> list[Record]:
    """The whole records of one segment file, up to the first that is cut short, stale or absent."""
    number = int(path.stem)
    data = path.read_bytes()
    if len(data) < SEGMENT_HEAD.size:
        return []
    magic, segment_id = SEGMENT_HEAD.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        return []
    records: list[Record] = []
    pos = SEGMENT_HEAD.size
    while pos + HEAD.size <= len(data):
        magic, record_segment, meta_len, body_len, crc = HEAD.unpack_from(data, pos)
        meta_at = pos + HEAD.size
        body_at = meta_at + meta_len
        end = body_at + body_len
        if (magic != RECORD_MAGIC or record_segment != segment_id or end > len(data)
                or zlib.crc32(data[meta_at:body_at]) != crc):
            break
        meta = json.loads(data[meta_at:body_at])
        body = data[body_at:end]
        if body_len and hashlib.sha256(body).hexdigest() != meta.get("sha256"):
            break  # torn: the crash came before the fsync that would have acknowledged it
        records.append(Record(meta, body, number, end))
        pos = end
    return records


class Journal:
    """One process's journal: ``<directory>/<number>.wal`` segments, plus at most one spare file."""

    def __init__(self, directory: Path, *, segment_bytes: int = 32 << 20) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._fd = -1
        self._number = 0  # the open segment
        self._id = 0
        self._offset = 0  # where the next record goes in the open segment
        self._allocated = 0  # bytes of the open segment's file that already exist on disk
        self._written = 0  # bytes written by this process, all segments: what durable() counts
        self._synced = 0
        self._flushing: asyncio.Future[None] | None = None
        self._open_records: dict[int, int] = {}  # segment number -> records not yet indexed
        self._sealed: list[int] = []  # full segments, oldest first
        self._spare: asyncio.Future[None] | None = None
        self._has_spare = False  # SPARE exists (kept here: append() asks on every record)
        self._lock = asyncio.Lock()  # one writer at a time keeps positions and file order the same
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="journal-fdatasync")
        # Set by the gateway: whether one association alone is storing (then :meth:`durable`
        # flushes on the event loop itself, see there).
        self.alone: Callable[[], bool] | None = None

    # --- start ------------------------------------------------------------------------
    def segments(self) -> list[Path]:
        return sorted((p for p in self.directory.glob(f"*{SUFFIX}") if p.stem.isdigit()), key=lambda p: int(p.stem))

    def replay(self) -> Iterator[Record]:
        """The records a previous run left, oldest first."""
        for path in self.segments():
            yield from read_segment(path)

    def open(self) -> None:
        """Start a new segment after whatever is on disk (call once replayed records are indexed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self.segments()
        self._number = int(existing[-1].stem) if existing else 0
        self._start_segment()

    def retire_all(self) -> None:
        """Remove every segment but the open one: their records are indexed and synced."""
        for path in self.segments():
            if int(path.stem) != self._number:
                self._recycle(path)

    def _start_segment(self) -> None:
        """Open segment number + 1: the spare file when one is ready, else a new empty file."""
        if self._fd >= 0:
            os.close(self._fd)
        self._number += 1
        path = self.directory / f"{self._number:012d}{SUFFIX}"
        spare = self.directory / SPARE
        if spare.exists():
            os.rename(spare, path)
        self._has_spare = False
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        self._allocated = os.fstat(self._fd).st_size
        self._id = secrets.randbits(64)
        os.pwrite(self._fd, SEGMENT_HEAD.pack(SEGMENT_MAGIC, self._id), 0)
        os.fsync(self._fd)
        fsync_path(self.directory)  # the segment's name must survive a crash too
        self._offset = SEGMENT_HEAD.size
        self._allocated = max(self._allocated, self._offset)
        self._open_records.setdefault(self._number, 0)

    def _prepare_spare(self) -> None:
        """Zero-fill a file of ``segment_bytes`` for the next segment (on a thread)."""
        spare = self.directory / SPARE
        if spare.exists():
            return
        tmp = spare.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(max(1, self.segment_bytes // len(ZEROS))):
                os.write(fd, ZEROS)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, spare)
        fsync_path(self.directory)

    def _want_spare(self) -> None:
        if self._spare is None and not self._has_spare:
            self._spare = asyncio.ensure_future(asyncio.to_thread(self._prepare_spare))
            self._spare.add_done_callback(self._spare_done)

    def _spare_done(self, future: asyncio.Future[None]) -> None:
        self._spare = None
        if not future.cancelled() and future.exception() is None:
            self._has_spare = True
        elif not future.cancelled():
            log.warning("could not prepare a journal segment ahead", extra={"error": repr(future.exception())})

    def _recycle(self, path: Path) -> None:
        spare = self.directory / SPARE
        if not spare.exists() and path.stat().st_size >= self.segment_bytes:
            os.rename(path, spare)  # its blocks exist: the next segment's fdatasyncs stay cheap
            self._has_spare = True
        else:
            path.unlink(missing_ok=True)

    # --- appending --------------------------------------------------------------------
    async def append(self, meta: dict[str, Any] | bytes, body: Sequence[Buffer] = ()) -> Written:
        """Write a record (``meta`` as a dict, or already :func:`encode_meta`-d); it is durable
        once :meth:`durable` of its ``position`` returns."""
        encoded = meta if isinstance(meta, bytes) else encode_meta(meta)
        length = sum(len(b) for b in body)
        size = HEAD.size + len(encoded) + length
        async with self._lock:
            full = self._offset >= self.segment_bytes
            # Just after start the segment is a new file: move to the prepared one as soon as it exists.
            early = self._allocated < self.segment_bytes and self._has_spare
            if full or early:
                await self.durable(self._written)  # everything in the segment is on disk first
                self._sealed.append(self._number)
                self._start_segment()
            if self._offset + size > self._allocated or self._offset > self.segment_bytes // 4:
                self._want_spare()
            head = HEAD.pack(RECORD_MAGIC, self._id, len(encoded), length, zlib.crc32(encoded))
            parts = [head, encoded, *body]
            if length > 256 << 10:
                await asyncio.to_thread(_write_all, self._fd, parts, self._offset)
            else:  # a copy into the page cache: cheaper than a thread hop
                _write_all(self._fd, parts, self._offset)
            self._offset += size
            self._allocated = max(self._allocated, self._offset)
            self._written += size
            self._open_records[self._number] += 1
            return Written(self._number, self._offset, self._written)

    async def durable(self, position: int | None = None) -> None:
        """Return once everything written before ``position`` (default: now) is on disk; one fdatasync serves every waiter."""
        position = self._written if position is None else position
        while self._synced < position:
            if self._flushing is None:
                if self.alone is not None and self.alone():
                    # Nobody else can be waiting: flush here.  The thread hand-off there and back
                    # costs about as much as the fdatasync, and there is nothing to share it with.
                    target = self._written
                    os.fdatasync(self._fd)
                    self._synced = max(self._synced, target)
                    continue
                self._flushing = asyncio.ensure_future(self._flush())
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        target, fd = self._written, self._fd
        try:
            # Its own thread: behind blob writes in the default executor it would wait its turn.
            await asyncio.get_running_loop().run_in_executor(self._syncer, os.fdatasync, fd)
            self._synced = max(self._synced, target)
        finally:
            self._flushing = None

    @property
    def retirable(self) -> bool:
        return any(self._open_records.get(s, 0) == 0 for s in self._sealed)

    def indexed(self, segment: int) -> None:
        """A record of ``segment`` is indexed (or was refused): it no longer needs the journal."""
        self._open_records[segment] -= 1

    async def retire(self, sync: Callable[[], Awaitable[None]]) -> int:
        """Recycle full segments whose records are all indexed, after ``sync`` made that durable."""
        done = [s for s in self._sealed if self._open_records.get(s, 0) == 0]
        if not done:
            return 0
        await sync()
        for segment in done:
            self._sealed.remove(segment)
            self._open_records.pop(segment, None)
            path = self.directory / f"{segment:012d}{SUFFIX}"
            if path.exists():
                self._recycle(path)
        return len(done)

    async def close(self, sync: Callable[[], Awaitable[None]] | None = None) -> None:
        """Close; with ``sync`` and every record indexed, leave nothing to replay."""
        if self._spare is not None:
            await asyncio.gather(self._spare, return_exceptions=True)
        if self._fd < 0:
            return
        await self.durable()
        os.close(self._fd)
        self._fd = -1
        self._syncer.shutdown(wait=False)
        if sync is not None and all(n == 0 for n in self._open_records.values()):
            await sync()
            for path in self.segments():
                path.unlink(missing_ok=True)


def _write_all(fd: int, parts: list[Buffer], offset: int) -> None:
    if len(parts) > 512:  # pwritev takes at most IOV_MAX (1024 on Linux) buffers
        parts = [b"".join(parts)]
    total = sum(len(p) for p in parts)
    written = os.pwritev(fd, parts, offset)
    if written < total:  # a short write (rare: a signal, a full disk): finish it or fail loudly
        rest = b"".join(bytes(p) for p in parts)[written:]
        while rest:
            n = os.pwrite(fd, rest, offset + written)
            written += n
            rest = rest[n:]
