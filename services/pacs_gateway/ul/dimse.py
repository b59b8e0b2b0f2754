"""DIMSE command sets (PS3.7 9.3, E.1) for C-ECHO and C-STORE, always implicit VR little endian."""

from __future__ import annotations

import struct
from typing import NamedTuple

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
NO_DATA_SET = 0x0101

VERIFICATION = "1.2.840.10008.1.1"

_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")

# Command elements (group 0000) by element number
AFFECTED_SOP_CLASS_UID = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE_UID = 0x1000


class BadCommand(ValueError):
    """A command set that cannot be decoded."""


class Command(NamedTuple):  # a tuple: built for every message, and cheaper than a frozen dataclass
    field: int
    message_id: int
    has_data_set: bool
    sop_class_uid: str
    sop_instance_uid: str


def decode(data: bytes) -> Command:
    elements: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < 8:
            raise BadCommand("truncated command element")
        group, element, length = _ELEMENT.unpack_from(data, offset)
        offset += 8
        if group != 0x0000 or offset + length > end:
            raise BadCommand(f"bad command element ({group:04X},{element:04X}) of length {length}")
        elements[element] = data[offset:offset + length]
        offset += length
    try:
        field = _US.unpack(elements[COMMAND_FIELD])[0]
        data_set_type = _US.unpack(elements[COMMAND_DATA_SET_TYPE])[0]
        message_id = _US.unpack(elements.get(MESSAGE_ID, b"\x00\x00"))[0]
    except (KeyError, struct.error) as exc:
        raise BadCommand(f"command set lacks a required element: {exc}") from None
    return Command(field, message_id, data_set_type != NO_DATA_SET, _text(elements.get(AFFECTED_SOP_CLASS_UID)),
                   _text(elements.get(AFFECTED_SOP_INSTANCE_UID)))


def _text(value: bytes | None) -> str:
    return value.decode("ascii", "replace").rstrip("\x00 ") if value else ""


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _lo(value: str) -> bytes:
    raw = value.encode("ascii", "replace")[:64]
    return raw + b" " if len(raw) % 2 else raw


def response(field: int, *, responding_to: int, sop_class_uid: str, sop_instance_uid: str = "",
             status: int = 0x0000, comment: str = "") -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set with its group length."""
    body = _element(AFFECTED_SOP_CLASS_UID, _uid(sop_class_uid))
    body += _element(COMMAND_FIELD, _US.pack(field))
    body += _element(MESSAGE_ID_BEING_RESPONDED_TO, _US.pack(responding_to))
    body += _element(COMMAND_DATA_SET_TYPE, _US.pack(NO_DATA_SET))
    body += _element(STATUS, _US.pack(status))
    if comment and status != 0x0000:
        body += _element(ERROR_COMMENT, _lo(comment))
    if sop_instance_uid:
        body += _element(AFFECTED_SOP_INSTANCE_UID, _uid(sop_instance_uid))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _explicit(element: int, vr: bytes, value: bytes) -> bytes:
    """A group 0002 element in explicit VR little endian (PS3.5 7.1.2)."""
    if vr == b"OB":
        return struct.pack("<HH2sxxI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
              implementation_class_uid: str, implementation_version_name: str) -> bytes:
    """Preamble, ``DICM`` and File Meta Information (PS3.10 7.1) for a received data set."""
    version = implementation_version_name.encode("ascii")
    body = (_explicit(0x0001, b"OB", b"\x00\x01")
            + _explicit(0x0002, b"UI", _uid(sop_class_uid))
            + _explicit(0x0003, b"UI", _uid(sop_instance_uid))
            + _explicit(0x0010, b"UI", _uid(transfer_syntax_uid))
            + _explicit(0x0012, b"UI", _uid(implementation_class_uid))
            + _explicit(0x0013, b"SH", version + b" " if len(version) % 2 else version))
    return b"\x00" * 128 + b"DICM" + _explicit(0x0000, b"UL", struct.pack("<I", len(body))) + body
