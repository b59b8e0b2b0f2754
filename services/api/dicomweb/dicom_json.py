"""The DICOM JSON Model (PS3.18 F.2), free of I/O.

* :func:`record_json` — a QIDO-RS result from an index record (keyword -> value);
* :func:`dataset_json` — WADO-RS metadata from a parsed header, bulk data (and Pixel Data,
  which the header read stops before) replaced by ``BulkDataURI``;
* :func:`store_response` — the STOW-RS response data set (PS3.18 10.5.3).

pydicom writes the JSON (``Dataset.to_json_dict``), so value representations, person-name
component groups (``Alphabetic`` / ``Ideographic``) and numbers follow the standard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

MEDIA_TYPE = "application/dicom+json"
BULK_THRESHOLD = 1024  # bytes: larger binary values travel as BulkDataURI
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_DATA = 0x7FE00010

# STOW-RS response attributes (PS3.18 Table 10.5.3-1).
RETRIEVE_URL = 0x00081190
FAILED_SOP_SEQUENCE = "FailedSOPSequence"
REFERENCED_SOP_SEQUENCE = "ReferencedSOPSequence"


def tag_hex(tag: int) -> str:
    return f"{tag:08X}"


def _element_value(vr: str, value: Any) -> Any:
    if vr in ("IS", "US", "UL", "SS", "SL", "UV", "SV"):
        return [int(v) for v in value] if isinstance(value, list) else int(value)
    if vr in ("DS", "FL", "FD"):
        return [float(v) for v in value] if isinstance(value, list) else float(value)
    return [str(v) for v in value] if isinstance(value, list) else str(value)


def record_json(record: dict[str, Any], keywords: Iterable[str], *, extra: dict[int, Any] | None = None
                ) -> dict[str, Any]:
    """``keywords`` of ``record`` in the DICOM JSON model; absent values are omitted, as QIDO allows."""
    ds = Dataset()
    for keyword in keywords:
        value = record.get(keyword)
        tag = tag_for_keyword(keyword)
        if tag is None or value is None or value == "" or value == []:
            continue
        vr = dictionary_VR(tag)
        try:
            ds.add_new(tag, vr, _element_value(vr, value))
        except (TypeError, ValueError):
            continue  # an index value the VR cannot carry is left out, never a failed search
    out = ds.to_json_dict()
    for tag, value in (extra or {}).items():
        out[tag_hex(tag)] = {"vr": dictionary_VR(tag), "Value": [value]}
    return dict(sorted(out.items()))


def dataset_json(ds: Dataset, bulk_uri: Callable[[int], str], *, pixel_data: tuple[str, str] | None = None
                 ) -> dict[str, Any]:
    """``ds`` as DICOM JSON; top-level binary values over the threshold become ``bulk_uri(tag)``.

    ``pixel_data``: ``(vr, uri)`` for the Pixel Data element the header read stopped before.
    Binary values inside sequences stay inline (base64) up to any size: they are rare and
    small in practice, and a URI for them would need a path the bulk data route does not take.
    """
    out = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD,
                          bulk_data_element_handler=lambda element: bulk_uri(int(element.tag)))
    for element in ds:  # sequences again, all inline: the handler cannot tell nested from top level
        if element.VR == "SQ":
            key = tag_hex(int(element.tag))
            out[key] = Dataset({int(element.tag): element}).to_json_dict(bulk_data_threshold=2**62)[key]
    if pixel_data is not None:
        vr, uri = pixel_data
        out[tag_hex(PIXEL_DATA)] = {"vr": vr, "BulkDataURI": uri}
    return dict(sorted(out.items()))


def store_response(study_url: str | None, stored: list[tuple[str, str, str]],
                   failed: list[tuple[str, str, int]]) -> dict[str, Any]:
    """``stored``: (class, instance, retrieve URL); ``failed``: (class, instance, Failure Reason)."""
    ds = Dataset()
    if study_url:
        ds.RetrieveURL = study_url
    if stored:
        ds.ReferencedSOPSequence = [_sop_item(c, i, RetrieveURL=url) for c, i, url in stored]
    if failed:
        ds.FailedSOPSequence = [_sop_item(c, i, FailureReason=reason) for c, i, reason in failed]
    return ds.to_json_dict()


def _sop_item(sop_class: str, sop_instance: str, **more: Any) -> Dataset:
    item = Dataset()
    if sop_class:
        item.ReferencedSOPClassUID = sop_class
    if sop_instance:
        item.ReferencedSOPInstanceUID = sop_instance
    for keyword, value in more.items():
        setattr(item, keyword, value)
    return item
