"""PDU framing (PS3.8 9.3): the 6-byte header, the fixed-format PDUs, P-DATA-TF and its PDVs.

A-ASSOCIATE-RQ/AC are variable and rare (once per association): pynetdicom's PDU classes
decode and encode them.  Everything on the per-message path is done here with ``struct``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07
PDU_TYPES = {A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT}

HEADER = struct.Struct(">BxI")
PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context ID, message control header

# A-ABORT source (PS3.8 9.3.8): 0 service user, 2 service provider.  Provider reasons:
ABORT_SOURCE_USER = 0x00
ABORT_SOURCE_PROVIDER = 0x02
REASON_NOT_SPECIFIED = 0x00
REASON_UNRECOGNIZED_PDU = 0x01
REASON_UNEXPECTED_PDU = 0x02
REASON_UNRECOGNIZED_PDU_PARAMETER = 0x04
REASON_UNEXPECTED_PDU_PARAMETER = 0x05
REASON_INVALID_PDU_PARAMETER_VALUE = 0x06

# A-ASSOCIATE-RJ (PS3.8 9.3.4): (result, source, diagnostic)
RJ_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
RJ_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service user, called AE title not recognised
RJ_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient, service provider (presentation), local limit exceeded
RJ_PROTOCOL_VERSION = (0x01, 0x02, 0x02)  # permanent, service provider (ACSE), protocol version

# PDV message control header bits (PS3.8 E.2)
COMMAND = 0x01
LAST = 0x02


class ProtocolError(Exception):
    """The peer broke PS3.8: answered with A-ABORT (source provider) and ``reason``."""

    def __init__(self, message: str, reason: int = REASON_INVALID_PDU_PARAMETER_VALUE) -> None:
        super().__init__(message)
        self.reason = reason


def a_associate_rj(result: int, source: int, diagnostic: int) -> bytes:
    return HEADER.pack(A_ASSOCIATE_RJ, 4) + bytes((0, result, source, diagnostic))


def a_abort(source: int = ABORT_SOURCE_PROVIDER, reason: int = REASON_NOT_SPECIFIED) -> bytes:
    return HEADER.pack(A_ABORT, 4) + bytes((0, 0, source, reason))


def a_release_rp() -> bytes:
    return HEADER.pack(A_RELEASE_RP, 4) + b"\x00\x00\x00\x00"


def p_data_tf(context_id: int, message: bytes, *, command: bool, max_pdu: int) -> bytes:
    """One message (command or data set) as P-DATA-TF PDUs of one PDV each, within ``max_pdu``.

    ``max_pdu`` is the peer's Maximum Length Received (0 = no limit): the PDU length field,
    so each PDV may carry ``max_pdu - 6`` bytes (its own length, context ID and control byte).
    """
    room = len(message) if max_pdu == 0 else max(1, max_pdu - 6)
    out = bytearray()
    flag = COMMAND if command else 0
    for start in range(0, max(len(message), 1), room):
        chunk = message[start:start + room]
        last = start + room >= len(message)
        out += HEADER.pack(P_DATA_TF, 6 + len(chunk))
        out += PDV_HEADER.pack(2 + len(chunk), context_id, flag | (LAST if last else 0))
        out += chunk
    return bytes(out)


def pdvs(body: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """The PDVs of a P-DATA-TF body: (presentation context ID, control header, data)."""
    view = memoryview(body)
    offset, end = 0, len(body)
    if end == 0:
        raise ProtocolError("P-DATA-TF without a PDV", REASON_INVALID_PDU_PARAMETER_VALUE)
    while offset < end:
        if end - offset < 6:
            raise ProtocolError("truncated PDV item header")
        length, context_id, control = PDV_HEADER.unpack_from(view, offset)
        if length < 2 or offset + 4 + length > end:
            raise ProtocolError(f"PDV item length {length} does not fit the PDU")
        yield context_id, control, view[offset + 6:offset + 4 + length]
        offset += 4 + length
