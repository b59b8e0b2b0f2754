"""Read an ECG instance from the blob store and decode it (the one module here that does I/O)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pydicom

from ..core.blobs.port import BlobStore
from ..core import bounded
from .waveform import ECG_SOP_CLASSES, Ecg, WaveformError, decode


def is_ecg(instance: dict[str, Any]) -> bool:
    return instance.get("sop_class_uid") in ECG_SOP_CLASSES


def parse(data: bytes, transfer_syntax: str = "", limits: bounded.Limits = bounded.Limits()) -> Ecg:
    """Decode a Part 10 file's waveform; :class:`WaveformError` if it is none or corrupt.

    With its ``transfer_syntax`` known, the file first passes the store's checks (:mod:`bounded`):
    one stored before them is never inflated past the ceiling nor decoded past the depth limit."""
    try:
        if transfer_syntax:
            bounded.check_part10(memoryview(data), transfer_syntax, limits)
    except bounded.Refused as exc:
        raise WaveformError(f"the stored file cannot be decoded: {exc.reason}") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
        raise WaveformError(f"the stored file cannot be parsed: {exc}") from None
    try:
        return decode(ds)
    except RecursionError:  # sequences nested too deep (stored before the gateway refused them)
        raise WaveformError("the stored file's sequences are nested too deeply to decode") from None


async def load(blobs: BlobStore, instance: dict[str, Any], limits: bounded.Limits = bounded.Limits()) -> Ecg:
    if not instance.get("blob_key"):
        raise WaveformError(f"instance {instance.get('id')} has no stored file")
    data = await blobs.read(instance["blob_key"])
    return await asyncio.to_thread(parse, data, instance.get("transfer_syntax_uid") or "", limits)
