"""Ingest: one received instance to blob + index + ``instance.stored``.

Two halves, because pynetdicom calls us on its own threads:

* :meth:`Ingest.prepare` runs where the data set arrived: read the indexed attributes (from
  the bytes, :mod:`.header`; pydicom when that declines), validate, hash.  No store I/O.
* :meth:`Ingest.commit` runs on the event loop.  With a :class:`~.journal.Journal` (the
  gateway): the record goes into the journal, and once its fdatasync (shared with every
  association waiting at that moment) and the blob write are done, the index transaction
  commits without an fsync of its own; then the C-STORE is answered.  The instance is
  visible and durable before the response, with one device flush, and the journal
  replays it after a power loss.  Without a journal (STOW-RS): blob fsynced first, then a
  durable index transaction.

Either way a crash leaves the blob and the index agreeing: at most an unreferenced blob,
which :func:`sweep_orphans` removes at start, never an index entry without its file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset

from ..core.events import Event, utc_now
from ..core.fsync import fsync_path
from ..core.runtime import Runtime
from ..core.sealing import SEALED_PREFIX
from ..core.store.port import Batch
from ..core import bounded, identity
from . import header as fast_header
from . import model, refusals, statuses
from .indexer import Indexer, Indexing, Waiting
from .journal import Buffer, Journal, Record, Written, encode_meta
from .model import InstanceHeader, StoreRefused

log = logging.getLogger("yilian.pacs_gateway.ingest")

SOURCE = "/yilian/pacs_gateway"
CHUNK = 1 << 20
ORPHAN_AGE_SECONDS = 60.0
JOURNAL_STAGED_PREFIX = "journal-"  # staging files a journal record names: not orphans
OWNERS_KEPT = 4096  # studies whose indexed owner is remembered (a study's instances come together)


@dataclass(frozen=True, slots=True)
class Received:
    """A C-STORE as it arrived: the Part 10 file (on disk, or in memory) plus the request's identifiers."""

    calling_ae: str
    organization: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: Path | None = None
    # In memory instead: the File Meta Information, then the data set as it came in fragments.
    file_meta: bytes = b""
    data_set: tuple[Buffer, ...] = ()
    sha256: str | None = None  # the Part 10 file's digest when the receiver hashed it while receiving

    @property
    def in_memory(self) -> bool:
        return self.path is None

    def size(self) -> int:
        if self.path is not None:
            return self.path.stat().st_size
        return len(self.file_meta) + sum(len(b) for b in self.data_set)

    def part10(self) -> list[Buffer]:
        return [self.file_meta, *self.data_set]


@dataclass(frozen=True, slots=True)
class Prepared:
    received: Received
    header: InstanceHeader
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    comment: str = ""
    # "new", "identical" (duplicate, nothing stored), "kept_first", "replaced"
    result: str = "new"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _header(received: Received, limits: bounded.Limits, issuers: identity.Issuers) -> InstanceHeader:
    """The indexed attributes, once the data set is known to be whole (:func:`bounded.walk`):
    picked out of the bytes by that walk when possible, else parsed by pydicom (``issuers``: the
    consortium's accepted national identifiers)."""
    ts = received.transfer_syntax_uid
    try:
        if received.path is None:
            data: bytes | memoryview = b"".join(received.data_set)
            if ts == bounded.DEFLATED:
                data = bounded.inflate([data], len(data), limits)
            return _from_data_set(received, data, limits, issuers)
        with bounded.mapped(received.path) as view:
            return _from_data_set(received, bounded.data_set_of(view, ts, limits), limits, issuers)
    except bounded.TooLarge as exc:
        raise StoreRefused(statuses.OUT_OF_RESOURCES, exc.reason) from None
    except bounded.Refused as exc:
        raise StoreRefused(statuses.CANNOT_UNDERSTAND_UNPARSABLE, exc.reason) from None


def _from_data_set(received: Received, data: bytes | memoryview, limits: bounded.Limits,
                   issuers: identity.Issuers) -> InstanceHeader:
    ts = received.transfer_syntax_uid
    raw = bounded.walk(data, ts, limits, wanted=fast_header.TAGS)
    scanned = fast_header.from_values(raw, issuers) if ts != bounded.EXPLICIT_BIG_ENDIAN else None
    if scanned is not None:
        return scanned
    # inflated: not the file again
    return _parsed(received, issuers, bytes(data) if ts == bounded.DEFLATED else None)


def _at_pixel_data(tag: Any, vr: Any, length: Any) -> bool:
    return tag == bounded.PIXEL_DATA


def _parsed(received: Received, issuers: identity.Issuers, inflated: bytes | None = None) -> InstanceHeader:
    """The header by pydicom, of a data set :func:`bounded.walk` found whole (``inflated``: a
    deflated one, inflated already)."""
    source: Any = received.path if received.path is not None else io.BytesIO(b"".join(received.part10()))
    try:
        # Header only: pixel data and other bulk values stay where they are.
        ds = (dcmread(source, stop_before_pixels=True, defer_size=4096) if inflated is None else
              read_dataset(io.BytesIO(inflated), is_implicit_VR=False, is_little_endian=True,
                           stop_when=_at_pixel_data))
        return model.header_of(ds, issuers)
    except StoreRefused:
        raise
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError, AttributeError,
            RecursionError) as exc:
        raise StoreRefused(statuses.CANNOT_UNDERSTAND_UNPARSABLE, f"dataset not parsable: {exc}") from None


class Ingest:
    def __init__(self, rt: Runtime, journal: Journal | None = None) -> None:
        self.rt = rt
        self.journal = journal
        self.indexer: Indexing | None = Indexer(self) if journal is not None else None
        self._retiring: asyncio.Task[int] | None = None
        self._read_now = True  # until the store says get_now is not for it
        # Studies with instances this process answered and has not indexed yet: study UID ->
        # [organisation, instances].  A new study's first sender owns it before the index knows it.
        self._claims: dict[str, list[Any]] = {}
        # Indexed studies' owners, remembered: a study's organisation never changes once indexed
        # (nothing deletes a study), and a point read per instance costs ~30-60 µs of CPU.
        self._owners: dict[str, str] = {}
        self.limits = bounded.Limits.of(rt.settings)

    # --- where the data set arrived ------------------------------------------------------
    def prepare(self, received: Received) -> Prepared:
        """Validate ``received``; raise :class:`StoreRefused` with the DIMSE status if it cannot be kept."""
        size = received.size()
        limit = self.rt.settings.max_instance_bytes
        if size > limit:  # before parsing anything of a file we will not keep
            raise StoreRefused(statuses.OUT_OF_RESOURCES, f"instance of {size} bytes exceeds limit {limit}")
        header = _header(received, self.limits, self.rt.consortium.identity_issuers)
        model.check(header, requested_sop_class=received.sop_class_uid,
                    requested_sop_instance=received.sop_instance_uid, size=size, max_size=limit)
        digest = received.sha256
        if digest is None:
            if received.path is not None:
                digest = _sha256(received.path)
            else:
                h = hashlib.sha256()
                for part in received.part10():
                    h.update(part)
                digest = h.hexdigest()
        return Prepared(received, header, size, digest)

    # --- on the event loop ---------------------------------------------------------------
    def lookup(self, sop_instance_uid: str) -> asyncio.Future[dict | None]:
        """Start reading the index entry of an instance about to arrive (the C-STORE-RQ names it):
        by the time its data set is in, :meth:`commit` has the answer without waiting for it."""
        return self._read("instances", sop_instance_uid)

    def _read(self, collection: str, id: str) -> asyncio.Future[dict | None]:
        """A document, as a future.  An embedded store answers at once (``get_now``: a tenth of the
        CPU of a thread hand-off)."""
        if self._read_now:
            future: asyncio.Future[dict | None] = asyncio.get_running_loop().create_future()
            try:
                future.set_result(self.rt.store.get_now(collection, id))
                return future
            except NotImplementedError:
                self._read_now = False  # a networked store: read on its own terms from now on
            except Exception as exc:  # noqa: BLE001 - the answer's path reports it, as get() would
                future.set_exception(exc)
                return future
        return asyncio.ensure_future(self.rt.store.get(collection, id))

    async def _check_owner(self, p: Prepared) -> None:
        """Refuse (:class:`StoreRefused`) an instance of a study another organisation owns: the
        index's owner, or for a study not indexed yet, the organisation whose instances of it this
        process answered first.  A claim is looked at before and after the read: one released
        meanwhile was indexed before the read began, or is seen now.  (Two processes answering
        the first instances of one study at once cannot see each other: the indexer keeps the
        first owner and quarantines the other's, :meth:`_decide`.)"""
        uid = p.header.study_uid
        owner = self._owners.get(uid)
        if owner is None:
            claimed = self._claims.get(uid)
            study = await self._read("studies", uid)
            if study is not None:
                owner = study["organization"]
                if len(self._owners) >= OWNERS_KEPT:
                    del self._owners[next(iter(self._owners))]  # the oldest
                self._owners[uid] = owner
            else:
                claimed = claimed or self._claims.get(uid)
                owner = claimed[0] if claimed else None
        model.check_owner(owner, p.received.organization)

    def _claim(self, p: Prepared) -> None:
        claim = self._claims.setdefault(p.header.study_uid, [p.received.organization, 0])
        claim[1] += 1

    def _release(self, p: Prepared) -> None:
        claim = self._claims.get(p.header.study_uid)
        if claim is not None and claim[0] == p.received.organization:
            claim[1] -= 1
            if claim[1] <= 0:
                del self._claims[p.header.study_uid]

    async def commit(self, p: Prepared, looked_up: asyncio.Future[dict | None] | None = None) -> Outcome:
        if self.journal is None:
            if looked_up is not None:
                looked_up.cancel()
            return await self._commit_direct(p)
        assert self.indexer is not None
        h = p.header
        waiting = self.indexer.waiting(h.sop_instance_uid)
        if waiting is not None and waiting.prepared.received.organization == p.received.organization:
            # A copy is on its way into the index: answer as if it were there.  (Another
            # organisation's copy goes the long way, to the ownership check.)
            early = self._duplicate(_as_indexed(waiting.prepared), p)
            if early is not None:
                return early
        if looked_up is None or looked_up.cancelled():
            looked_up = self.lookup(h.sop_instance_uid)
        if p.received.path is not None:
            p = dataclasses.replace(p, received=dataclasses.replace(
                p.received, path=await asyncio.to_thread(self._keep_staged, p.received.path)))
        now = utc_now()
        try:
            meta = encode_meta(record_meta(p, now))  # once: the indexer process gets the same bytes
            written = await self.journal.append(meta, p.received.part10() if p.received.in_memory else ())
        except BaseException as exc:
            looked_up.cancel()
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreRefused(statuses.OUT_OF_RESOURCES, "storage full") from None
            raise
        try:
            # The index read (started when the C-STORE-RQ came) overlaps the data set and the
            # fdatasync: a copy already held is answered from it.
            await self.journal.durable(written.position)
            await self._check_owner(p)
            existing = await looked_up
            early = self._duplicate(existing, p) if existing is not None else None
        except BaseException:
            looked_up.cancel()
            # Refused (another organisation's study, an instance moving series) or failed: keep nothing.
            await self._abandon(written)
            raise
        if early is not None:
            await self._abandon(written)
            return early
        self._claim(p)  # at once after the check: no other C-STORE runs in between
        try:
            await self.indexer.submit(Waiting(p, now, written, meta=meta))
        except BaseException:
            self._release(p)
            raise
        return Outcome(statuses.SUCCESS)

    async def _abandon(self, written: Written) -> None:
        """The journal record will not be indexed.  If this note is lost in a crash, the replay
        indexes the instance after all: the sender's retry is then an identical duplicate."""
        assert self.journal is not None
        try:
            marker = await self.journal.append({"abandoned": [written.segment, written.end]})
            self.journal.indexed(marker.segment)
        except Exception:  # noqa: BLE001 - the answer to the sender matters more than the note
            log.exception("could not note an abandoned journal record")
        self.journal.indexed(written.segment)

    async def index_batch(self, batch: list[Waiting]) -> None:
        """Blob files for ``batch``, then one index transaction for all of it (the indexer's step)."""
        # Blob files first (an index entry never names a missing file): in memory ones in one go.
        inline = [(w.key, w.prepared.received.part10(), w.prepared.sha256) for w in batch
                  if w.write_blob and w.prepared.received.in_memory]
        # A full disk raises OSError here: the indexer retries later (the journal holds the bytes).
        await self.rt.blobs.put_many(inline, durable=False)
        staged = [w for w in batch if w.write_blob and not w.prepared.received.in_memory
                  and not await self._staged_file_moved(w)]
        await asyncio.gather(*(self.rt.blobs.put_file(w.key, w.prepared.received.path, sha256=w.prepared.sha256,
                                                      durable=False) for w in staged))
        reads: dict[tuple[str, str], None] = {}
        for w in batch:
            reads.update(dict.fromkeys(_reads(w.prepared)))
        keys = list(reads)
        results = await self.rt.store.apply(keys, lambda docs: self._decide_batch(batch, keys, docs), durable=False)
        for _, unreferenced in results:
            if unreferenced is not None:
                await self.rt.blobs.delete(unreferenced)
        self.indexed(batch)

    async def _staged_file_moved(self, w: Waiting) -> bool:
        """Whether an earlier attempt at indexing ``w`` moved its staging file into the blob store
        already (``put_file`` takes the file): the index failed after it, and this is the retry."""
        path = w.prepared.received.path
        assert path is not None
        return not path.exists() and await self.rt.blobs.exists(w.key)

    def indexed(self, items: list[Waiting]) -> None:
        """``items`` are indexed (or quarantined), here or by the indexer process (:mod:`.index_process`):
        their journal records are no longer needed, and full segments can go."""
        for item in items:
            if item.on_indexed is not None:  # it came from another process's journal (index_process)
                item.on_indexed()
            elif item.written is not None and self.journal is not None:
                self.journal.indexed(item.written.segment)
                self._release(item.prepared)  # answered here (replayed ones were never claimed)
        if self.journal is not None and self.journal.retirable:
            self._retire_soon()

    async def index_in_process(self, address: str) -> None:
        """From now on forward journaled instances to the indexer process at ``address``
        (after :meth:`recover`, which indexes here)."""
        from .index_process import IndexClient
        if self.indexer is not None:
            await self.indexer.stop()
        self.indexer = IndexClient(self, address)
        self.indexer.start()

    async def quarantine(self, item: Waiting, error: BaseException) -> Path:
        """Set aside an acknowledged instance the index cannot take: its file and why, for an
        administrator; the journal no longer needs it.  Nothing acknowledged is dropped."""
        p = item.prepared
        folder = self.rt.settings.data_dir / "quarantine" / (self.journal.directory.name if self.journal is not None
                                                             else "index-process")
        name = f"{p.header.sop_instance_uid}.{p.sha256[:16]}"
        # A staging file the failed attempt moved into the blob store is read back from there
        # (a copy: the blob goes with the orphan sweep, which checks that nothing names it).
        moved = p.received.path is not None and await self._staged_file_moved(item)
        local = self.rt.blobs.local_path(item.key) if moved else None
        data = await self.rt.blobs.read(item.key) if moved and local is None else None

        def _keep() -> Path:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{name}.dcm"
            if p.received.path is not None and not moved:
                if p.received.path.exists():
                    os.replace(p.received.path, target)
            elif local is not None:
                shutil.copyfile(local, target)
                fsync_path(target)
            else:
                with open(target, "wb") as f:
                    f.writelines(p.received.part10() if data is None else (data,))
                    f.flush()
                    os.fsync(f.fileno())
            (folder / f"{name}.json").write_text(json.dumps(
                {**record_meta(p, item.received_at), "error": repr(error)}, ensure_ascii=False, indent=1))
            return target
        target = await asyncio.to_thread(_keep)
        try:  # for the sending clinic's desk: it was answered Success, and is not in its study
            await refusals.write(self.rt.store, [refusals.note_doc(
                kind="quarantined", organization=p.received.organization, calling_ae=p.received.calling_ae,
                sop_instance_uid=p.header.sop_instance_uid, study_uid=p.header.study_uid,
                status=error.status if isinstance(error, StoreRefused) else None,
                reason=error.comment if isinstance(error, StoreRefused) else repr(error))])
        except Exception:  # noqa: BLE001 - the file and the log line stand; the store may be away
            log.exception("quarantine not noted for the clinic", extra={"file": str(target)})
        log.error("acknowledged instance could not be indexed; kept in quarantine", extra={
            "sop_instance_uid": p.header.sop_instance_uid, "calling_ae": p.received.calling_ae,
            "file": str(target), "error": repr(error)})
        self.indexed([item])
        return target

    def _decide_batch(self, batch: list[Waiting], keys: list[tuple[str, str]], docs: list[dict | None]) -> Batch:
        """:meth:`_decide` for each instance in turn, each seeing the documents the ones before it wrote.

        An instance refused only now (another receiving process had the same SOP Instance UID in
        another series, or answered another organisation's first instances of the same new study
        a moment before) raises :class:`StoreRefused`: the sender was answered Success already, so
        the indexer sets it aside in quarantine, like any instance the index cannot take.
        """
        current = dict(zip(keys, docs))
        puts: dict[tuple[str, str], dict] = {}
        out = Batch(result=[])
        for w in batch:
            p = w.prepared
            one = self._decide(p, w.key, w.received_at, *(current[k] for k in _reads(p)))
            for collection, doc in one.puts:
                current[(collection, doc["id"])] = puts[(collection, doc["id"])] = doc
            out.events += one.events
            out.result.append(one.result)
        out.puts = [(collection, doc) for (collection, _), doc in puts.items()]
        return out

    async def _commit_direct(self, p: Prepared) -> Outcome:
        key = model.blob_key(p.header, p.sha256)
        study = await self.rt.store.get("studies", p.header.study_uid)  # refused before any file is written
        model.check_owner(study["organization"] if study is not None else None, p.received.organization)
        existing = await self.rt.store.get("instances", p.header.sop_instance_uid)
        if existing is not None:
            early = self._duplicate(existing, p)
            if early is not None:
                return early
        await self._put_blob(p, key)
        try:
            outcome, unreferenced = await self._index(p, key, utc_now())
        except BaseException:
            await self.rt.blobs.delete(key)  # never keep a file the index does not know
            raise
        if unreferenced is not None:
            await self.rt.blobs.delete(unreferenced)
        return outcome

    async def _put_blob(self, p: Prepared, key: str) -> None:
        """The blob, fsynced (the path without a journal)."""
        r = p.received
        try:
            if r.path is not None:
                await self.rt.blobs.put_file(key, r.path, sha256=p.sha256)
            else:
                await self.rt.blobs.put_bytes(key, r.part10(), sha256=p.sha256)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreRefused(statuses.OUT_OF_RESOURCES, "storage full") from None
            raise

    def _keep_staged(self, path: Path) -> Path:
        """Make a staging file one a journal record can name: durable, and not an orphan to the sweep."""
        assert self.journal is not None
        prefix = f"{JOURNAL_STAGED_PREFIX}{self.journal.directory.name}-"
        if not path.name.startswith(prefix):
            kept = path.with_name(prefix + path.name)
            os.rename(path, kept)
            path = kept
        fsync_path(path)  # its data (nothing left to write when the receiver synced it)
        fsync_path(path.parent)  # its name
        return path

    def _retire_soon(self) -> None:
        """Delete full journal segments in the background once all they hold is synced."""
        if self._retiring is None or self._retiring.done():
            self._retiring = asyncio.ensure_future(self._retire())

    async def _retire(self) -> int:
        assert self.journal is not None
        try:
            return await self.journal.retire(self.sync)
        except Exception:
            log.exception("journal segment retirement failed; will retry")
            return 0

    async def sync(self) -> None:
        """Make the blobs and the index written since the last sync durable."""
        await self.rt.blobs.sync()
        await self.rt.store.sync()

    async def recover(self) -> int:
        """Index what the journal holds from before a crash; start a fresh segment.  Returns records replayed."""
        assert self.journal is not None and self.indexer is not None
        self.indexer.start()
        staging = self.rt.blobs.staging_dir()
        records = list(self.journal.replay())
        abandoned = {tuple(r.meta["abandoned"]) for r in records if "abandoned" in r.meta}
        named: set[str] = set()
        replayed = 0
        for record in records:
            if "abandoned" in record.meta or (record.segment, record.end) in abandoned:
                continue
            replayed += 1
            item = await self._replayed(record, staging)
            if record.meta.get("staged"):
                named.add(record.meta["staged"])
            if item is not None:
                await self.indexer.submit(item)
        await self.indexer.settled()
        await self.sync()
        self.journal.open()
        self.journal.retire_all()
        prefix = f"{JOURNAL_STAGED_PREFIX}{self.journal.directory.name}-"
        if staging.is_dir():  # staged files no record names: a receive the crash cut short
            for path in staging.glob(f"{prefix}*"):
                if path.name not in named:
                    path.unlink(missing_ok=True)
        if replayed:
            log.warning("journal replayed after an unclean stop", extra={
                "journal": str(self.journal.directory), "records": replayed})
        return replayed

    async def _replayed(self, record: Record, staging: Path) -> Waiting | None:
        meta = record.meta
        prepared = prepared_from_record(meta, record.body, staging)
        existing = await self.rt.store.get("instances", prepared.header.sop_instance_uid)
        if existing is not None and existing.get("received_at", "") > meta["received_at"]:
            return None  # a later copy of the instance is indexed: this one changes nothing
        # Written again even if indexed: without its fsync the file may not have survived.  A
        # staging file no longer there was moved into place (its data was fsynced before).
        staged = prepared.received.path
        return Waiting(prepared, meta["received_at"], None, write_blob=staged is None or staged.exists())

    async def close(self, timeout: float | None = None) -> None:
        """Finish: index everything waiting; with that synced, the journal is left empty.  What the
        indexer could not finish within ``timeout`` stays in the journal for the next start."""
        if self.journal is None:
            return
        if self.indexer is not None:
            await self.indexer.stop(*(() if timeout is None else (timeout,)))
        if self._retiring is not None:
            with contextlib.suppress(Exception):
                await self._retiring
        await self.journal.close(self.sync)

    async def settled(self) -> None:
        """Return once every instance acknowledged so far is indexed."""
        if self.indexer is not None:
            await self.indexer.settled()

    def _duplicate(self, existing: dict, p: Prepared) -> Outcome | None:
        """The answer for an instance we already hold, or None to go on storing it."""
        h, r = p.header, p.received
        if existing["sha256"] == p.sha256:
            log.info("duplicate instance, identical bytes: nothing stored",
                     extra={"sop_instance_uid": h.sop_instance_uid, "calling_ae": r.calling_ae})
            return Outcome(statuses.SUCCESS, result="identical")
        if existing["study_uid"] != h.study_uid or existing["series_uid"] != h.series_uid:
            # An instance cannot move to another study or series; refuse instead of guessing.
            raise StoreRefused(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                               "SOP Instance UID already stored in another series")
        if self.rt.settings.duplicate_policy != "replace":
            log.warning("duplicate SOP Instance UID with different bytes: kept the first",
                        extra={"sop_instance_uid": h.sop_instance_uid, "calling_ae": r.calling_ae,
                               "stored_sha256": existing["sha256"], "received_sha256": p.sha256})
            return Outcome(statuses.SUCCESS, result="kept_first")
        return None

    async def _index(self, p: Prepared, key: str, now: str) -> tuple[Outcome, str | None]:
        """Index the instance stored under ``key``; also returns a blob key nothing refers to now.

        One :meth:`Store.apply`: one round trip to the store, and concurrent C-STOREs share a commit.
        """
        return await self.rt.store.apply(_reads(p), lambda docs: self._decide(p, key, now, *docs))
    def _decide(self, p: Prepared, key: str, now: str, existing: dict | None, series: dict | None,
                study: dict | None, patient: dict | None) -> Batch:
        h, r = p.header, p.received
        # The study's first sender owns it; another organisation's instance is refused (here, in
        # the transaction, also when it was answered before the owner's instances were indexed:
        # the indexer then sets it aside in quarantine), never merged, nor a copy replaced.
        model.check_owner(study["organization"] if study is not None else None, r.organization)
        if existing is not None:
            # Already held (another association, or an earlier copy): identical, kept or replaced.
            early = self._duplicate(existing, p)
            if early is not None:
                # Same bytes went to the same key; different bytes (kept first) are ours to remove.
                return Batch(result=(early, None if early.result == "identical" else key))
        instance = model.instance_doc(h, organization=r.organization, calling_ae=r.calling_ae,
                                      transfer_syntax_uid=r.transfer_syntax_uid, key=key, size=p.size,
                                      sha256=p.sha256, now=now)
        replaced = existing is not None
        added = 0 if replaced else 1
        owner = r.organization
        batch = Batch(puts=[("instances", instance),
                            ("series", model.series_doc(series, h, organization=owner, added=added)),
                            ("studies", model.study_doc(study, h, organization=owner, added=added,
                                                        new_series=series is None, now=now))],
                      events=[Event("instance.stored", subject=h.study_uid, source=SOURCE,
                                    data=model.stored_event_data(h, instance, replaced=replaced))])
        if study is None:
            batch.puts.append(("patients", model.patient_doc(patient, h, organization=owner, new_study=True)))
        if replaced:
            assert existing is not None
            log.warning("duplicate SOP Instance UID with different bytes: replaced",
                        extra={"sop_instance_uid": h.sop_instance_uid, "calling_ae": r.calling_ae,
                               "stored_sha256": existing["sha256"], "received_sha256": p.sha256})
            batch.result = (Outcome(statuses.SUCCESS, result="replaced"), existing["blob_key"])
        else:
            batch.result = (Outcome(statuses.SUCCESS), None)
        return batch


async def sweep_orphans(rt: Runtime, *, older_than: float = ORPHAN_AGE_SECONDS) -> int:
    """Remove what a crash between blob and index left behind; returns how many files went.

    Staging files and blobs no instance refers to, once older than ``older_than`` seconds
    (younger ones may belong to a C-STORE in flight in a worker process).
    """
    removed = 0
    cutoff = time.time() - older_than
    staging = rt.blobs.staging_dir()
    if staging.is_dir():
        for path in staging.iterdir():
            if path.name.startswith(JOURNAL_STAGED_PREFIX):
                continue  # a journal record names it; the journal's own recovery removes strays
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
    async for key in rt.blobs.keys():
        if key.startswith(SEALED_PREFIX):
            continue  # a sealed (封存) copy: no instance names it, on purpose
        # Keys are <study>/<series>/<sop>.<sha256 prefix>.dcm (model.blob_key).
        sop_uid = key.rsplit("/", 1)[-1].removesuffix(".dcm").rsplit(".", 1)[0]
        doc = await rt.store.get("instances", sop_uid)
        if doc is not None and doc.get("blob_key") == key:
            continue
        local = rt.blobs.local_path(key)
        try:
            if local is not None and local.stat().st_mtime >= cutoff:
                continue
        except FileNotFoundError:
            continue
        if await rt.blobs.delete(key):
            removed += 1
            log.warning("removed unreferenced blob", extra={"blob_key": key})
    return removed


_HEADER_FIELDS = [f.name for f in dataclasses.fields(InstanceHeader)]


def record_meta(p: Prepared, received_at: str) -> dict[str, Any]:
    r = p.received
    h = p.header  # its fields are scalars: no need for dataclasses.asdict's deep copy
    return {"header": {name: getattr(h, name) for name in _HEADER_FIELDS}, "calling_ae": r.calling_ae,
            "organization": r.organization, "transfer_syntax_uid": r.transfer_syntax_uid, "size": p.size,
            "sha256": p.sha256, "received_at": received_at, "staged": r.path.name if r.path is not None else None}


def prepared_from_record(meta: dict[str, Any], body: Buffer, staging: Path) -> Prepared:
    """The instance a journal record (:func:`record_meta` and the Part 10 bytes) describes."""
    h = InstanceHeader(**meta["header"])
    staged = staging / meta["staged"] if meta.get("staged") else None
    received = Received(calling_ae=meta["calling_ae"], organization=meta["organization"],
                        sop_class_uid=h.sop_class_uid, sop_instance_uid=h.sop_instance_uid,
                        transfer_syntax_uid=meta["transfer_syntax_uid"], sha256=meta["sha256"],
                        path=staged, data_set=(body,) if staged is None else ())
    return Prepared(received, h, meta["size"], meta["sha256"])


def _reads(p: Prepared) -> list[tuple[str, str]]:
    """The documents indexing ``p`` reads and may write.  The patient document matters only for a
    new study, which the sender's organisation owns."""
    h = p.header
    return [("instances", h.sop_instance_uid), ("series", h.series_uid), ("studies", h.study_uid),
            ("patients", model.patient_id_of(p.received.organization, h.patient_id))]


def _as_indexed(p: Prepared) -> dict[str, Any]:
    """What :meth:`Ingest._duplicate` needs of a copy still waiting to be indexed."""
    return {"sha256": p.sha256, "study_uid": p.header.study_uid, "series_uid": p.header.series_uid}
