"""Read the indexed attributes straight from a received data set's bytes, without pydicom.

Every C-STORE needs only the two dozen attributes :class:`~.model.InstanceHeader` keeps, all
at the top level and all before group 0029.  Building a pydicom Dataset for them costs
~0.7 ms per instance (most of it in element conversion), more than the rest of the C-STORE
together; walking the element headers to pick out their raw values costs ~30 µs.

:func:`bounded.walk` walks the element headers (checking on the way that the data set is
whole, :mod:`.bounded`) and picks out their raw values; :func:`from_values` decodes them with
the Specific Character Set when it is a single code page without escape sequences (GB18030,
GBK, ISO_IR 192, ISO_IR 100 ...).  Whatever else it meets — big endian, ISO 2022 code
extensions, a value it cannot decode, a missing UID — gives None and the caller parses with
pydicom, which words the refusal.  :func:`scan` does both, for a data set not checked yet.
"""

from __future__ import annotations

import struct

from pydicom.charset import python_encoding
from pydicom.uid import RE_VALID_UID

from ..core import bounded, identity
from .model import InstanceHeader

NOT_SCANNED = frozenset({"1.2.840.10008.1.2.2",  # explicit VR big endian (retired)
                         "1.2.840.10008.1.2.1.99"})  # deflated: the bytes are compressed

_U16 = struct.Struct("<H")

# Tag -> InstanceHeader field, and how to read it.
TEXT, PN, UID_, INT, US = "text", "pn", "uid", "int", "us"
WANTED: dict[int, tuple[str, str]] = {
    0x00080016: ("sop_class_uid", UID_), 0x00080018: ("sop_instance_uid", UID_),
    0x00080020: ("study_date", TEXT), 0x00080021: ("series_date", TEXT), 0x00080030: ("study_time", TEXT),
    0x00080031: ("series_time", TEXT), 0x00080050: ("accession_number", TEXT), 0x00080060: ("modality", TEXT),
    0x00080090: ("referring_physician", PN), 0x00081030: ("study_description", TEXT),
    0x00081070: ("operators_name", PN),  # the technician(s), for image quality rates (docs/quality.md)
    0x0008103E: ("series_description", TEXT), 0x00100010: ("patient_name", PN), 0x00100020: ("patient_id", TEXT),
    0x00100030: ("birth_date", TEXT), 0x00100040: ("sex", TEXT), 0x00180015: ("body_part", TEXT),
    0x0020000D: ("study_uid", UID_), 0x0020000E: ("series_uid", UID_), 0x00200010: ("study_id", TEXT),
    0x00200011: ("series_number", INT), 0x00200013: ("instance_number", INT), 0x00280008: ("number_of_frames", INT),
    0x00280010: ("rows", US), 0x00280011: ("columns", US),
}
SPECIFIC_CHARACTER_SET = 0x00080005
ISSUER_OF_PATIENT_ID = 0x00100021
OTHER_PATIENT_IDS = 0x00101002  # a sequence: bounded.walk hands over the whole element


TAGS = frozenset([*WANTED, SPECIFIC_CHARACTER_SET, ISSUER_OF_PATIENT_ID, OTHER_PATIENT_IDS])


class _Unscannable(Exception):
    """Something only pydicom should judge."""


def scan(data: bytes | memoryview, transfer_syntax: str) -> InstanceHeader | None:
    """The header of the data set ``data`` (no File Meta Information), or None to ask pydicom."""
    if transfer_syntax in NOT_SCANNED:
        return None
    try:
        return from_values(bounded.walk(data, transfer_syntax, bounded.Limits(), wanted=TAGS))
    except bounded.Refused:
        return None


def from_values(raw: dict[int, memoryview]) -> InstanceHeader | None:
    """The header from the raw values :func:`bounded.walk` picked out (``wanted=TAGS``) of a
    little endian data set, or None to ask pydicom.

    Missing or malformed UIDs also give None: every refusal is worded by :func:`model.header_of`.
    """
    try:
        return _header({tag: bytes(value) for tag, value in raw.items()})
    except (_Unscannable, struct.error):
        return None


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
    pairs = [(_text(raw.get(ISSUER_OF_PATIENT_ID, b""), codec), str(fields.get("patient_id", "")))]
    if raw.get(OTHER_PATIENT_IDS):
        pairs += _other_patient_ids(raw[OTHER_PATIENT_IDS], codec)
    fields["national_id"] = identity.first_key(pairs)
    return InstanceHeader(**fields)


_TAG = struct.Struct("<HHI")
_PATIENT_ID, _ISSUER = 0x00100020, 0x00100021


def _other_patient_ids(element: bytes, codec: str) -> list[tuple[str, str]]:
    """Other Patient IDs Sequence's (issuer, ID) pairs, read from the whole element that
    :func:`bounded.walk` checked: items of plain elements (reading them with pydicom cost more
    than the rest of the scan); anything else in an item (a sequence, bulk data) asks pydicom."""
    explicit = element[4:6] == b"SQ"
    pos = 12 if explicit else 8
    pairs: list[tuple[str, str]] = []
    while pos + 8 <= len(element):
        group, number, length = _TAG.unpack_from(element, pos)
        tag = group << 16 | number
        pos += 8
        if tag == bounded.SEQUENCE_END:
            break
        if tag != bounded.ITEM:
            raise _Unscannable
        end = len(element) if length == bounded.UNDEFINED else pos + length
        values: dict[int, bytes] = {}
        while pos + 8 <= end:
            group, number, _ = _TAG.unpack_from(element, pos)
            tag = group << 16 | number
            if tag == bounded.ITEM_END:
                pos += 8
                break
            if explicit:
                vr = element[pos + 4:pos + 6]
                if vr in bounded.LONG_VRS or vr not in bounded.KNOWN_VRS:
                    raise _Unscannable  # a sequence, a bulk value or no VR in an item: pydicom
                size, pos = _U16.unpack_from(element, pos + 6)[0], pos + 8
            else:
                size, pos = _TAG.unpack_from(element, pos)[2], pos + 8
                if size == bounded.UNDEFINED or tag in bounded.SEQUENCE_TAGS:
                    raise _Unscannable
            values[tag] = element[pos:pos + size]
            pos += size
        pairs.append((_text(values.get(_ISSUER, b""), codec), _text(values.get(_PATIENT_ID, b""), codec)))
    return pairs
