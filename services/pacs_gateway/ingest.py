"""Ingest: one received instance from a file on disk to blob + index + ``instance.stored``.

Two halves, because pynetdicom calls us on its own threads:

* :meth:`Ingest.prepare` runs on the association's thread: parse the header only,
  validate, hash.  CPU and disk work, never on the event loop.
* :meth:`Ingest.commit` runs on the event loop: blob first (atomic rename), then one
  store transaction with the instance, series, study and patient documents and the
  event.  A crash between the two leaves an unreferenced blob, which
  :func:`sweep_orphans` removes at start; never an index entry without its file.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from ..core.events import Event, utc_now
from ..core.runtime import Runtime
from ..core.store.port import Batch
from . import model, statuses
from .model import InstanceHeader, StoreRefused

log = logging.getLogger("yilian.pacs_gateway.ingest")

SOURCE = "/yilian/pacs_gateway"
CHUNK = 1 << 20
ORPHAN_AGE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Received:
    """A C-STORE as pynetdicom handed it over: a Part 10 file plus the request's identifiers."""

    path: Path
    calling_ae: str
    organization: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    sha256: str | None = None  # the file's digest when the receiver hashed it while writing


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


class Ingest:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    # --- on the association's thread -------------------------------------------------
    def prepare(self, received: Received) -> Prepared:
        """Validate ``received``; raise :class:`StoreRefused` with the DIMSE status if it cannot be kept."""
        size = received.path.stat().st_size
        limit = self.rt.settings.max_instance_bytes
        if size > limit:  # before parsing anything of a file we will not keep
            raise StoreRefused(statuses.OUT_OF_RESOURCES, f"instance of {size} bytes exceeds limit {limit}")
        try:
            # Header only: pixel data and other bulk values stay on disk.
            ds = dcmread(received.path, stop_before_pixels=True, defer_size=4096)
            header = model.header_of(ds)
        except StoreRefused:
            raise
        except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError, AttributeError) as exc:
            raise StoreRefused(statuses.CANNOT_UNDERSTAND_UNPARSABLE, f"dataset not parsable: {exc}") from None
        model.check(header, requested_sop_class=received.sop_class_uid,
                    requested_sop_instance=received.sop_instance_uid, size=size, max_size=limit)
        return Prepared(received, header, size, received.sha256 or _sha256(received.path))

    # --- on the event loop ---------------------------------------------------------------
    async def commit(self, p: Prepared) -> Outcome:
        rt, h, r = self.rt, p.header, p.received
        existing = await rt.store.get("instances", h.sop_instance_uid)
        if existing is not None:
            early = self._duplicate(existing, p)
            if early is not None:
                return early
        key = model.blob_key(h, p.sha256)
        try:
            await rt.blobs.put_file(key, r.path, sha256=p.sha256)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreRefused(statuses.OUT_OF_RESOURCES, "storage full") from None
            raise
        try:
            outcome, unreferenced = await self._index(p, key)
        except BaseException:
            await rt.blobs.delete(key)  # never keep a file the index does not know
            raise
        if unreferenced is not None:
            await rt.blobs.delete(unreferenced)
        return outcome

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

    async def _index(self, p: Prepared, key: str) -> tuple[Outcome, str | None]:
        """Index the instance stored under ``key``; also returns a blob key nothing refers to now.

        One :meth:`Store.apply`: one round trip to the store, and concurrent C-STOREs share a commit.
        """
        h, r = p.header, p.received
        # The patient document matters only for a new study, which the sender's organisation owns.
        reads = [("instances", h.sop_instance_uid), ("series", h.series_uid), ("studies", h.study_uid),
                 ("patients", model.patient_id_of(r.organization, h.patient_id))]
        return await self.rt.store.apply(reads, lambda docs: self._decide(p, key, utc_now(), *docs))

    def _decide(self, p: Prepared, key: str, now: str, existing: dict | None, series: dict | None,
                study: dict | None, patient: dict | None) -> Batch:
        h, r = p.header, p.received
        if existing is not None:
            # Another association stored it between our check and now: decide again.
            early = self._duplicate(existing, p)
            if early is not None:
                # Same bytes went to the same key; different bytes (kept first) are ours to remove.
                return Batch(result=(early, None if early.result == "identical" else key))
        instance = model.instance_doc(h, organization=r.organization, calling_ae=r.calling_ae,
                                      transfer_syntax_uid=r.transfer_syntax_uid, key=key, size=p.size,
                                      sha256=p.sha256, now=now)
        replaced = existing is not None
        added = 0 if replaced else 1
        owner = study["organization"] if study else r.organization
        if study is not None and owner != r.organization:
            log.warning("instance for a study owned by another organisation; owner kept",
                        extra={"study_uid": h.study_uid, "owner": owner, "calling_ae": r.calling_ae})
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
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
    async for key in rt.blobs.keys():
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
