"""Read an ECG instance from the blob store and decode it (the one module here that does I/O)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pydicom

from ..core.blobs.port import BlobStore
from .waveform import ECG_SOP_CLASSES, Ecg, WaveformError, decode


def is_ecg(instance: dict[str, Any]) -> bool:
    return instance.get("sop_class_uid") in ECG_SOP_CLASSES


def parse(data: bytes) -> Ecg:
    """Decode a Part 10 file's waveform; :class:`WaveformError` if it is none or corrupt."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
        raise WaveformError(f"the stored file cannot be parsed: {exc}") from None
    try:
        return decode(ds)
    except RecursionError:  # sequences nested too deep (stored before the gateway refused them)
        raise WaveformError("the stored file's sequences are nested too deeply to decode") from None


async def load(blobs: BlobStore, instance: dict[str, Any]) -> Ecg:
    if not instance.get("blob_key"):
        raise WaveformError(f"instance {instance.get('id')} has no stored file")
    data = await blobs.read(instance["blob_key"])
    return await asyncio.to_thread(parse, data)
