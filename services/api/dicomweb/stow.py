"""STOW-RS (PS3.18 10.5): Part 10 instances over HTTPS into the same ingest path as C-STORE.

Each ``application/dicom`` part is streamed to the blob store's staging directory, then
handed to :class:`services.pacs_gateway.ingest.Ingest` exactly like a C-STORE: the same
validation (UIDs, size, parsable header), duplicate policy, index documents and
``instance.stored`` event, and ``study.received`` later from the gateway's announcer.
The File Meta Information plays the part of the C-STORE request (SOP Class and Instance
UIDs, transfer syntax), so a file whose meta and data set disagree is refused as the
gateway refuses a C-STORE whose request and data set disagree.

The owner is the caller's organisation; an instance of a study another organisation owns is
refused (0x0124 Not Authorized, also for an admin), never merged.  Failure reasons are the DIMSE statuses
(PS3.18 Table 10.5.3-2 uses the same codes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydicom.filereader import read_file_meta_info

from ...core.auth import Principal
from ...core.runtime import Runtime
from ...pacs_gateway import statuses
from ...pacs_gateway.ingest import Ingest, Received
from ...pacs_gateway.model import StoreRefused
from ..problems import unparsable
from .multipart import parse_media_type

log = logging.getLogger("yilian.api.dicomweb.stow")

CALLING_AE = "STOW-RS"  # recorded as the instance's calling AE: the user is in the audit log
CHUNK = 1 << 16
# RFC 2046 caps a boundary at 70 characters and aiohttp enforces it, but common STOW-RS clients
# exceed it (Orthanc's DICOMweb plugin sends two UUIDs: 73).  Longer ones are still refused.
MAX_BOUNDARY = 200


class StowError(Exception):
    """The request as a whole cannot be taken: an HTTP status and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _Parts(MultipartReader):
    """aiohttp's multipart reader with a boundary of up to MAX_BOUNDARY characters."""

    def _get_boundary(self) -> str:
        boundary: str = self._mimetype.parameters["boundary"]
        if len(boundary) > MAX_BOUNDARY:
            raise ValueError(f"boundary {boundary[:80]!r}... is too long ({MAX_BOUNDARY} characters at most)")
        return boundary


@dataclass
class StoreResult:
    stored: list[tuple[str, str, str, str]] = field(default_factory=list)  # (class, instance, study, series)
    failed: list[tuple[str, str, int, str]] = field(default_factory=list)  # (class, instance, reason, why)
    results: dict[str, int] = field(default_factory=dict)  # ingest outcome -> count

    @property
    def status(self) -> int:
        if not self.failed:
            return 200
        return 202 if self.stored else 409


def check_content_type(header: str | None) -> None:
    media_type, params = parse_media_type(header or "")
    if media_type != "multipart/related":
        raise StowError(415, f"Content-Type must be multipart/related; type=\"application/dicom\", got {header!r}")
    if (params.get("type") or "").lower() != "application/dicom":
        raise StowError(415, "only multipart/related; type=\"application/dicom\" is accepted "
                             "(DICOM JSON/XML metadata with bulk data is not supported)")
    if not params.get("boundary"):
        raise StowError(400, "multipart/related without a boundary parameter")


async def _spool(part: BodyPartReader, staging: Path, limit: int) -> Path:
    """Write the part's body to a staging file; 413 as soon as it passes ``limit``."""
    staging.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=".stow", dir=staging)
    path, size = Path(name), 0
    try:
        with os.fdopen(fd, "wb") as f:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise StowError(413, f"instance larger than the limit of {limit} bytes")
                f.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


async def store(request: web.Request, rt: Runtime, who: Principal, study_uid: str | None) -> StoreResult:
    check_content_type(request.headers.get("Content-Type"))
    ingest, result = Ingest(rt), StoreResult()
    staging, limit = rt.blobs.staging_dir(), rt.settings.max_instance_bytes
    parts = 0
    try:
        reader = _Parts(request.headers, request.content)
        while (part := await reader.next()) is not None:
            parts += 1
            if isinstance(part, MultipartReader):
                result.failed.append(("", "", statuses.CANNOT_UNDERSTAND_UNPARSABLE, "nested multipart"))
                continue
            part_type, _ = parse_media_type(part.headers.get("Content-Type", "application/dicom"))
            if part_type != "application/dicom":
                await part.release()
                result.failed.append(("", "", statuses.CANNOT_UNDERSTAND_UNPARSABLE,
                                      f"part of type {part_type!r}, not application/dicom"))
                continue
            path = await _spool(part, staging, limit)
            try:
                await _ingest_one(rt, ingest, who, path, study_uid, result)
            finally:
                path.unlink(missing_ok=True)  # kept files were renamed away
    except ConnectionResetError:
        # The client went away mid-upload (a township link that dropped): what was stored stays
        # stored, and the answer nobody will read still goes to the audit trail with it.
        result.failed.append(("", "", statuses.PROCESSING_FAILURE, "connection lost mid-upload"))
        return result
    except (ValueError, AssertionError, asyncio.IncompleteReadError) as exc:
        # aiohttp's multipart reader: a missing or broken boundary, truncated body
        raise StowError(400, f"malformed multipart body: {exc or type(exc).__name__}") from None
    except HttpProcessingError as exc:
        # a part's headers without their blank line, or a line longer than aiohttp reads
        raise StowError(400, f"malformed multipart body: {unparsable(exc).detail}") from None
    if parts == 0:
        raise StowError(400, "multipart body without any part")
    return result


async def _ingest_one(rt: Runtime, ingest: Ingest, who: Principal, path: Path, study_uid: str | None,
                      result: StoreResult) -> None:
    try:
        meta = await asyncio.to_thread(read_file_meta_info, path)
        sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
        sop_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        syntax = str(meta.get("TransferSyntaxUID", "") or "")
    except Exception:  # noqa: BLE001 - whatever pydicom raises, the part is not Part 10
        result.failed.append(("", "", statuses.CANNOT_UNDERSTAND_UNPARSABLE,
                              "not a DICOM Part 10 file (no File Meta Information)"))
        return
    if not (sop_class and sop_instance and syntax):
        result.failed.append((sop_class, sop_instance, statuses.CANNOT_UNDERSTAND_UNPARSABLE,
                              "File Meta Information lacks SOP Class, SOP Instance or Transfer Syntax UID"))
        return
    received = Received(path=path, calling_ae=CALLING_AE, organization=who.organization,
                        sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax_uid=syntax)
    try:
        prepared = await asyncio.to_thread(ingest.prepare, received)
        study = prepared.header.study_uid
        if study_uid is not None and study != study_uid:
            raise StoreRefused(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                               "Study Instance UID differs from the one in the request URL")
        # A study another organisation owns is refused by the ingest (0x0124), as over C-STORE.
        outcome = await ingest.commit(prepared)
    except StoreRefused as refused:
        log.warning("STOW-RS instance refused", extra={"sop_instance_uid": sop_instance, "user": who.user_id,
                                                       "status": f"0x{refused.status:04X}",
                                                       "reason": refused.comment})
        result.failed.append((sop_class, sop_instance, refused.status, refused.comment))
        return
    except Exception as exc:  # noqa: BLE001 - store or blob store failed: nothing kept, the client may retry
        log.exception("STOW-RS instance failed", extra={"sop_instance_uid": sop_instance, "user": who.user_id})
        result.failed.append((sop_class, sop_instance, statuses.PROCESSING_FAILURE,
                              f"processing failure: {type(exc).__name__}"))
        return
    result.stored.append((sop_class, sop_instance, study, prepared.header.series_uid))
    result.results[outcome.result] = result.results.get(outcome.result, 0) + 1
