"""WADO-RS (PS3.18 10.4): instances as stored, metadata, bulk data, frames, rendered images.

Instances go out as the gateway stored them, bit for bit (``transfer-syntax=*``
semantics): a request that names another transfer syntax is answered 406, since
transcoding would change the bytes the clinic sent.  Frames of uncompressed instances are
cut straight out of the file (seek + read, never the whole Pixel Data); compressed frames
go as stored with their own media type, or decoded to ``application/octet-stream`` when
only that is accepted.  File reads run in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array

from ...core.blobs.port import BlobStore
from ...core.store.port import Store
from ...core import bounded
from . import render
from .dicom_json import BINARY_VRS
from .multipart import MediaRange

DICOM = "application/dicom"
OCTET = "application/octet-stream"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
UNCOMPRESSED = frozenset({"1.2.840.10008.1.2", EXPLICIT_LE, "1.2.840.10008.1.2.2"})
# PS3.18 Table 8.7.3-2: media types of compressed frames.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc", "1.2.840.10008.1.2.5": "image/dicom-rle",
}


class NotAcceptable(Exception):
    """Nothing the client accepts can be produced (406)."""


class FrameError(ValueError):
    """Bad frame list, or an instance without frames (400 / 404 by the caller)."""


# --- finding --------------------------------------------------------------------------

async def instances_of(store: Store, study_uid: str, series_uid: str | None = None,
                       sop_uid: str | None = None) -> list[dict[str, Any]]:
    where: dict[str, Any] = {"study_uid": study_uid}
    if series_uid is not None:
        where["series_uid"] = series_uid
    if sop_uid is not None:
        where["id"] = sop_uid
    return await store.find("instances", where, sort=(("series_uid", 1), ("instance_number", 1), ("id", 1)))


# --- negotiation ------------------------------------------------------------------------

def _accepts_type(r: MediaRange, part_type: str) -> bool:
    if r.media_type in ("*/*", "multipart/*"):
        return r.type in (None, part_type, "*/*")
    return r.media_type == "multipart/related" and r.type in (None, part_type)


def negotiate_instances(accept: list[MediaRange], syntaxes: set[str]) -> str | None:
    """The ``transfer-syntax`` to announce for instances stored in ``syntaxes`` (None: mixed or any)."""
    for r in accept:
        if not _accepts_type(r, DICOM):
            continue
        wanted = r.transfer_syntax
        if wanted in (None, "*"):
            return wanted if wanted == "*" or len(syntaxes) != 1 else next(iter(syntaxes))
        if syntaxes <= {wanted}:
            return wanted
    raise NotAcceptable(f"instances are stored in {', '.join(sorted(syntaxes))}; they are sent as stored "
                        "(Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*)")


def negotiate_frames(accept: list[MediaRange], syntax: str) -> tuple[str, bool]:
    """(part media type, decode?) for frames of an instance stored in ``syntax``."""
    stored_type = OCTET if syntax in UNCOMPRESSED else FRAME_MEDIA_TYPES.get(syntax)
    for r in accept:
        part = r.type if r.media_type == "multipart/related" else (None if r.media_type in ("*/*", "multipart/*")
                                                                   else "?")
        if part == "?":
            continue
        if part in (None, "*/*") or r.transfer_syntax == "*":
            if stored_type is not None:
                return stored_type, False
            continue
        if part == stored_type and r.transfer_syntax in (None, syntax) and stored_type != OCTET:
            return stored_type, False
        if part == OCTET and r.transfer_syntax in (None, EXPLICIT_LE):
            return OCTET, syntax not in UNCOMPRESSED
    raise NotAcceptable(f"frames are stored in transfer syntax {syntax}"
                        + (f" ({stored_type})" if stored_type else "")
                        + "; accept that or application/octet-stream")


# --- files ------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def local_file(blobs: BlobStore, key: str) -> AsyncIterator[Path]:
    """The blob as a local file: the file itself for a file store, else a temporary copy."""
    path = blobs.local_path(key)
    if path is not None:
        yield path
        return
    fd, name = tempfile.mkstemp(suffix=".dcm", dir=blobs.staging_dir())
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in blobs.read_chunks(key):
                f.write(chunk)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def read_header(path: Path, syntax: str, limits: bounded.Limits) -> Dataset:
    """Everything before Pixel Data; large values are read only when touched.  A deflated file is
    inflated only that far; :class:`bounded.Undecodable` for one no read could decode."""
    return bounded.read_dataset(path, syntax, limits, stop_before_pixels=True)


def check(path: Path, syntax: str, limits: bounded.Limits) -> None:
    """:class:`bounded.Undecodable` unless the stored file passes the checks of a store (an
    instance stored before them, or damaged since, is refused here rather than crash pydicom)."""
    try:
        bounded.check_file(path, syntax, limits)
    except bounded.Refused as exc:
        raise bounded.Undecodable(exc.reason) from None


def pixel_vr(ds: Dataset, syntax: str) -> str:
    return "OW" if syntax in UNCOMPRESSED and int(ds.get("BitsAllocated") or 8) > 8 else "OB"


@dataclass(frozen=True)
class PixelLayout:
    offset: int  # file position of the Pixel Data value
    length: int  # 0xFFFFFFFF when encapsulated
    frames: int
    frame_size: int  # bytes per frame when native


def pixel_layout(path: Path) -> PixelLayout:
    ds = dcmread(path, defer_size=256)
    element = ds.get_item(0x7FE00010, keep_deferred=True)
    if element is None:
        raise FrameError("instance has no pixel data")
    frames = int(ds.get("NumberOfFrames") or 1)
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.get("BitsAllocated") or 8)
    frame_size = rows * columns * samples * bits // 8
    return PixelLayout(element.value_tell, element.length, frames, frame_size)


def parse_frames(text: str) -> list[int]:
    try:
        numbers = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise FrameError(f"frame list must be comma-separated numbers, got {text!r}") from None
    if not numbers or any(n < 1 for n in numbers):
        raise FrameError("frame numbers start at 1")
    if len(set(numbers)) != len(numbers):
        raise FrameError("frame list names a frame more than once")
    return numbers


def frame_layout(path: Path, numbers: list[int], syntax: str, limits: bounded.Limits) -> PixelLayout:
    """The Pixel Data layout, once ``numbers`` (1-based, distinct) are known to be frames of the file."""
    check(path, syntax, limits)
    layout = pixel_layout(path)
    if len(numbers) > layout.frames:
        raise FrameError(f"{len(numbers)} frames asked of an instance of {layout.frames}")
    for n in numbers:
        if n > layout.frames:
            raise FrameError(f"frame {n} out of range 1..{layout.frames}")
    return layout


def read_frame(path: Path, layout: PixelLayout, n: int, *, decode: bool) -> bytes:
    """Frame ``n`` (1-based) of the file, as stored or decoded to native little endian: one frame
    read at a time, so a response of many frames is streamed, never built whole."""
    if decode:
        arr = pixel_array(path, index=n - 1 if layout.frames > 1 else None)
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    with open(path, "rb") as f:
        if layout.length == 0xFFFFFFFF:
            f.seek(layout.offset)
            return get_frame(f, n - 1, number_of_frames=layout.frames)
        f.seek(layout.offset + (n - 1) * layout.frame_size)
        return f.read(layout.frame_size)


def read_frames(path: Path, numbers: list[int], *, decode: bool, syntax: str = EXPLICIT_LE,
                limits: bounded.Limits = bounded.Limits()) -> list[bytes]:
    """Frames ``numbers`` all at once (for a caller that wants them in a list, not a response)."""
    layout = frame_layout(path, numbers, syntax, limits)
    return [read_frame(path, layout, n, decode=decode) for n in numbers]


def read_bulk(path: Path, tag: int, syntax: str, limits: bounded.Limits) -> bytes | tuple[int, int]:
    """The value of top-level element ``tag``: Pixel Data as stored is its (offset, length) in the
    file, to be streamed (:func:`file_range`); a smaller value, its bytes."""
    check(path, syntax, limits)
    if syntax == bounded.DEFLATED:  # no file offsets to seek to: the data set, inflated within its ceiling
        ds = bounded.read_dataset(path, syntax, limits, stop_before_pixels=False)
        if tag not in ds or (tag != 0x7FE00010 and ds[tag].VR not in BINARY_VRS):
            raise KeyError(tag)
        return bytes(ds[tag].value or b"")
    if tag == 0x7FE00010:
        layout = pixel_layout(path)
        if layout.length != 0xFFFFFFFF:
            return layout.offset, layout.length
        # encapsulated: up to the Sequence Delimitation Item (last in the file)
        return layout.offset, path.stat().st_size - layout.offset - 8
    ds = read_header(path, syntax, limits)
    if tag not in ds or ds[tag].VR not in BINARY_VRS:
        raise KeyError(tag)  # only binary values are bulk data
    return bytes(ds[tag].value or b"")


async def file_range(path: Path, offset: int, length: int, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    """``length`` bytes of the file from ``offset``, a chunk at a time, read off the event loop."""
    def read(f: Any, n: int) -> bytes:
        return f.read(n)
    with open(path, "rb") as f:
        f.seek(offset)
        while length > 0:
            data = await asyncio.to_thread(read, f, min(chunk, length))
            if not data:
                raise ConnectionAbortedError(f"{path.name} ends before its Pixel Data")  # cut: never a partial lie
            length -= len(data)
            yield data


def render_frame(path: Path, frame: int, syntax: str, limits: bounded.Limits, **options: Any) -> bytes:
    """Frame ``frame`` (1-based) rendered (see :mod:`.render`): the header, and that frame alone, decoded."""
    check(path, syntax, limits)
    header = read_header(path, syntax, limits)
    render.check_frame(header, frame)
    try:
        arr = pixel_array(path, index=frame - 1 if render.frame_count(header) > 1 else None)
    except Exception as exc:  # noqa: BLE001 - no decoder, corrupt data: the client is told
        raise render.RenderError(f"pixel data cannot be decoded: {exc}") from None
    return render.render(header, arr, **options)
