"""Read the indexed attributes straight from a received data set's bytes, without pydicom.

Every C-STORE needs only the two dozen attributes :class:`~.model.InstanceHeader` keeps, all
at the top level and all before group 0029.  Building a pydicom Dataset for them costs
~0.7 ms per instance (most of it in element conversion), more than the rest of the C-STORE
together; walking the element headers to pick out their raw values costs ~30 µs.

:func:`scan` handles implicit and explicit VR little endian (which covers every encapsulated
syntax): sequences of undefined length are skipped item by item, values are decoded with the
Specific Character Set when it is a single code page without escape sequences (GB18030,
GBK, ISO_IR 192, ISO_IR 100 ...).  Whatever else it meets — big endian, deflate, ISO 2022
code extensions, a value it cannot decode, lengths that run past the end — it returns None and
the caller parses with pydicom, which is then the one to accept or refuse the data set.
"""

from __future__ import annotations

import struct

from pydicom.charset import python_encoding
from pydicom.uid import RE_VALID_UID

from .model import InstanceHeader

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
NOT_SCANNED = frozenset({"1.2.840.10008.1.2.2",  # explicit VR big endian (retired)
                         "1.2.840.10008.1.2.1.99"})  # deflated: the bytes are compressed
END = 0x00290000  # nothing indexed lies at or beyond group 0029
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
MAX_DEPTH = 16

_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
                       b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})

# Tag -> InstanceHeader field, and how to read it.
TEXT, PN, UID_, INT, US = "text", "pn", "uid", "int", "us"
WANTED: dict[int, tuple[str, str]] = {
    0x00080016: ("sop_class_uid", UID_), 0x00080018: ("sop_instance_uid", UID_),
    0x00080020: ("study_date", TEXT), 0x00080021: ("series_date", TEXT), 0x00080030: ("study_time", TEXT),
    0x00080031: ("series_time", TEXT), 0x00080050: ("accession_number", TEXT), 0x00080060: ("modality", TEXT),
    0x00080090: ("referring_physician", PN), 0x00081030: ("study_description", TEXT),
    0x0008103E: ("series_description", TEXT), 0x00100010: ("patient_name", PN), 0x00100020: ("patient_id", TEXT),
    0x00100030: ("birth_date", TEXT), 0x00100040: ("sex", TEXT), 0x00180015: ("body_part", TEXT),
    0x0020000D: ("study_uid", UID_), 0x0020000E: ("series_uid", UID_), 0x00200010: ("study_id", TEXT),
    0x00200011: ("series_number", INT), 0x00200013: ("instance_number", INT), 0x00280008: ("number_of_frames", INT),
    0x00280010: ("rows", US), 0x00280011: ("columns", US),
}
SPECIFIC_CHARACTER_SET = 0x00080005


class _Unscannable(Exception):
    """Something only pydicom should judge."""


def scan(data: bytes | memoryview, transfer_syntax: str) -> InstanceHeader | None:
    """The header of the data set ``data`` (no File Meta Information), or None to ask pydicom.

    Missing or malformed UIDs also give None: every refusal is worded by :func:`model.header_of`.
    """
    if transfer_syntax in NOT_SCANNED:
        return None
    raw: dict[int, bytes] = {}
    try:
        _walk(memoryview(data), 0, transfer_syntax != IMPLICIT_VR_LITTLE_ENDIAN, raw, 0)
        return _header(raw)
    except (_Unscannable, struct.error):
        return None


def _walk(data: memoryview, pos: int, explicit: bool, raw: dict[int, bytes] | None, depth: int,
          item_end: bool = False) -> int:
    """Walk elements from ``pos``; top level (``raw`` given) stops at group 0029, an item at its delimiter."""
    end = len(data)
    while pos < end:
        if pos + 8 > end:
            raise _Unscannable
        group, element = _TAG.unpack_from(data, pos)
        tag = group << 16 | element
        if raw is not None and tag >= END:
            return pos
        if tag == ITEM_END and item_end:
            return pos + 8
        vr = b""
        if explicit and group != 0xFFFE:
            vr = bytes(data[pos + 4:pos + 6])
            if vr in LONG_VRS:
                if pos + 12 > end:
                    raise _Unscannable
                length = _U32.unpack_from(data, pos + 8)[0]
                pos += 12
            elif vr in SHORT_VRS:
                length = _U16.unpack_from(data, pos + 6)[0]
                pos += 8
            else:
                raise _Unscannable  # not explicit VR after all, or a VR we do not know
        else:
            length = _U32.unpack_from(data, pos + 4)[0]
            pos += 8
        if length == UNDEFINED:
            if raw is not None and tag in WANTED or depth >= MAX_DEPTH:
                raise _Unscannable
            # A sequence (or UN holding one, encoded implicit VR): skip its items.
            pos = _skip_items(data, pos, explicit and vr != b"UN", depth + 1)
            continue
        if pos + length > end:
            raise _Unscannable
        if raw is not None and (tag in WANTED or tag == SPECIFIC_CHARACTER_SET):
            raw[tag] = bytes(data[pos:pos + length])
        pos += length
    if item_end:
        raise _Unscannable  # the item never ended
    return pos


def _skip_items(data: memoryview, pos: int, explicit: bool, depth: int) -> int:
    end = len(data)
    while pos + 8 <= end:
        group, element = _TAG.unpack_from(data, pos)
        tag = group << 16 | element
        length = _U32.unpack_from(data, pos + 4)[0]
        pos += 8
        if tag == SEQUENCE_END:
            return pos
        if tag != ITEM:
            raise _Unscannable
        if length == UNDEFINED:
            pos = _walk(data, pos, explicit, None, depth, item_end=True)
        else:
            pos += length
    raise _Unscannable


def _codec(raw_charset: bytes | None) -> tuple[str, str]:
    """(the Specific Character Set as the index keeps it, the Python codec for its text)."""
    if not raw_charset:
        return "", "ascii"
    terms = [t.strip() for t in raw_charset.decode("ascii").rstrip("\0 ").split("\\")]
    if len(terms) != 1:
        raise _Unscannable  # code extensions (ISO 2022): pydicom's decoder
    codec = python_encoding.get(terms[0]) if terms[0] else "ascii"
    if codec is None or terms[0].startswith("ISO 2022"):
        raise _Unscannable
    return terms[0], codec


def _text(value: bytes, codec: str) -> str:
    if b"\x1b" in value:
        raise _Unscannable  # an escape sequence: pydicom's decoder
    try:
        text = value.decode(codec)
    except UnicodeDecodeError:
        raise _Unscannable from None
    if "\\" in text:  # several values: each stripped as pydicom does, joined as model._text does
        return "\\".join(v.rstrip("\0 ").strip() for v in text.split("\\"))
    return text.rstrip("\0 ").strip()


def _int(text: str) -> int | None:
    if not text or "\\" in text:  # pydicom gives several values, which are no number
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _header(raw: dict[int, bytes]) -> InstanceHeader:
    charset, codec = _codec(raw.get(SPECIFIC_CHARACTER_SET))
    fields: dict[str, object] = {"specific_character_set": charset}
    for tag, (name, kind) in WANTED.items():
        value = raw.get(tag)
        if kind == UID_:
            text = value.decode("ascii", "replace").rstrip("\0 ").strip() if value else ""
            if not text or len(text) > 64 or not RE_VALID_UID.match(text):  # UID.is_valid, without building a UID
                raise _Unscannable  # a refusal: pydicom's parse words it (or finds the data set broken)
            fields[name] = text
        elif value is None:
            continue
        elif kind == US:
            fields[name] = _U16.unpack(value)[0] if len(value) == 2 else None
        elif kind == INT:
            fields[name] = _int(_text(value, "ascii"))
        elif kind == PN:  # pydicom's PersonName drops empty trailing component groups
            fields[name] = "\\".join(v.rstrip("=") for v in _text(value, codec).split("\\"))
        else:
            fields[name] = _text(value, codec)
    return InstanceHeader(**fields)  # type: ignore[arg-type]
