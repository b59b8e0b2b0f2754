"""The structural walk (``core/bounded.py``) against pydicom's own files and hand-built
data sets in each encoding: it refuses what is not whole or nested too deep, and nothing else."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import DATA_ROOT

from services.core import bounded

LIMITS = bounded.Limits(max_sequence_depth=8)
TRUNCATED = {"rtplan_truncated.dcm", "MR_truncated.dcm"}  # pydicom reads them lazily; they are cut short


def _part10_files() -> list[Path]:
    return sorted(p for p in Path(DATA_ROOT).rglob("*.dcm") if p.read_bytes()[128:132] == b"DICM")


def test_every_whole_file_pydicom_ships_passes_and_the_truncated_ones_do_not():
    refused = {}
    for path in _part10_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            except Exception:  # noqa: BLE001 - not a file pydicom reads: not ours to judge here
                continue
        try:
            bounded.check_file(path, syntax, bounded.Limits())
        except bounded.Refused as exc:
            refused[path.name] = exc.reason
    assert set(refused) == TRUNCATED, refused


def _element(tag: int, vr: bytes, length: int, *, explicit: bool, order: str = "<") -> bytes:
    head = struct.pack(order + "HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack(order + "I", length)
    if vr in bounded.LONG_VRS:
        return head + vr + b"\0\0" + struct.pack(order + "I", length)
    return head + vr + struct.pack(order + "H", length)


def _nested(depth: int, *, explicit: bool, defined: bool, order: str = "<") -> bytes:
    """(0040,A730) sequences ``depth`` deep around one CS element, lengths defined or not."""
    inner = _element(0x0040A040, b"CS", 4, explicit=explicit, order=order) + b"TEXT"
    for _ in range(depth):
        if defined:
            item = struct.pack(order + "HHI", 0xFFFE, 0xE000, len(inner)) + inner
            inner = _element(0x0040A730, b"SQ", len(item), explicit=explicit, order=order) + item
        else:
            inner = (_element(0x0040A730, b"SQ", bounded.UNDEFINED, explicit=explicit, order=order)
                     + struct.pack(order + "HHI", 0xFFFE, 0xE000, bounded.UNDEFINED) + inner
                     + struct.pack(order + "HHI", 0xFFFE, 0xE00D, 0) + struct.pack(order + "HHI", 0xFFFE, 0xE0DD, 0))
    return inner


ENCODINGS = {"explicit LE": ("1.2.840.10008.1.2.1", True, "<"), "implicit LE": ("1.2.840.10008.1.2", False, "<"),
             "explicit BE": ("1.2.840.10008.1.2.2", True, ">")}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("defined", [True, False], ids=["defined", "undefined"])
def test_nesting_is_counted_in_every_encoding(encoding, defined):
    syntax, explicit, order = ENCODINGS[encoding]
    bounded.walk(_nested(8, explicit=explicit, defined=defined, order=order), syntax, LIMITS)
    with pytest.raises(bounded.TooDeep, match="deeper than 8"):
        bounded.walk(_nested(9, explicit=explicit, defined=defined, order=order), syntax, LIMITS)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_cut_anywhere_is_refused(encoding):
    """Every proper prefix of a whole data set that ends inside an element is refused."""
    syntax, explicit, order = ENCODINGS[encoding]
    data = _nested(3, explicit=explicit, defined=False, order=order)
    bounded.walk(data, syntax, LIMITS)
    for cut in range(1, len(data)):
        with pytest.raises(bounded.Malformed):
            bounded.walk(data[:cut], syntax, LIMITS)


def test_encapsulated_pixel_data_must_be_closed():
    frag = struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"\xff\xd8\xff\xd9"
    pixel = _element(bounded.PIXEL_DATA, b"OB", bounded.UNDEFINED, explicit=True) + frag
    bounded.walk(pixel + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0), "1.2.840.10008.1.2.4.50", LIMITS)
    with pytest.raises(bounded.Malformed, match="never closed"):
        bounded.walk(pixel, "1.2.840.10008.1.2.4.50", LIMITS)


def test_inflate_stops_at_the_ceiling_and_refuses_a_cut_stream():
    import zlib
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(b"\0" * (8 << 20)) + compressor.flush()
    limits = bounded.Limits(max_inflate_ratio=100)
    with pytest.raises(bounded.TooLarge):
        bounded.inflate([bomb], len(bomb), limits)
    assert len(bounded.inflate([bomb], len(bomb), bounded.Limits(max_inflate_ratio=2000))) == 8 << 20
    with pytest.raises(bounded.Malformed, match="cut short"):
        bounded.inflate([bomb[:len(bomb) // 2]], len(bomb), bounded.Limits(max_inflate_ratio=2000))
