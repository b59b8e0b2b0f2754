"""The blob store port: DICOM files by key, streamed, never whole large files in memory.

Keys are slash-separated (``<study>/<series>/<sop>.dcm``).  A blob appears atomically:
readers see the whole file or nothing.  The gateway writes the blob first and the index
second, so a crash between them leaves an unreferenced blob (swept at start), never an
index entry without its file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
Buffer = bytes | bytearray | memoryview


class BlobNotFound(KeyError):
    pass


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    sha256: str


class BlobStore(ABC):
    url: str

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def staging_dir(self) -> Path:
        """A local directory for receiving files before :meth:`put_file` (same filesystem when possible)."""

    @abstractmethod
    async def put_file(self, key: str, path: Path, *, sha256: str | None = None, durable: bool = True) -> BlobInfo:
        """Store the local file ``path`` under ``key`` (replacing any), consuming ``path``.

        ``durable=False``: the caller keeps its own copy until :meth:`sync` (the gateway's
        journal), so the store may skip its fsyncs; the blob is visible all the same.
        """

    async def put_bytes(self, key: str, parts: Sequence[Buffer], *, sha256: str, durable: bool = True) -> BlobInfo:
        """Store the concatenation of ``parts`` under ``key`` (replacing any); see :meth:`put_file`."""
        def _stage() -> Path:
            fd, tmp = tempfile.mkstemp(dir=self.staging_dir())
            with os.fdopen(fd, "wb") as out:
                out.writelines(parts)
            return Path(tmp)
        staged = await asyncio.to_thread(_stage)
        try:
            return await self.put_file(key, staged, sha256=sha256, durable=durable)
        finally:
            staged.unlink(missing_ok=True)

    async def put_many(self, items: Sequence[tuple[str, Sequence[Buffer], str]], *, durable: bool = True) -> None:
        """:meth:`put_bytes` for each (key, parts, sha256); stores may do it in one go."""
        await asyncio.gather(*(self.put_bytes(key, parts, sha256=sha256, durable=durable)
                               for key, parts, sha256 in items))

    async def sync(self) -> None:
        """Make every blob stored so far durable (after ``durable=False`` puts); stores that are always durable need nothing."""

    @abstractmethod
    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> BlobInfo: ...

    @abstractmethod
    def read_chunks(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """Stream the blob; raise :class:`BlobNotFound` when it is absent."""

    async def read(self, key: str) -> bytes:
        return b"".join([c async for c in self.read_chunks(key)])

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def delete(self, key: str) -> bool: ...

    @abstractmethod
    def keys(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key under ``prefix`` (for sweeping orphans)."""

    def local_path(self, key: str) -> Path | None:
        """The file behind ``key`` if this store keeps files locally (lets senders avoid a copy)."""
        return None
