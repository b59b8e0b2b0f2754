"""Hostile data sets, bounded: inflate with a ceiling, walk the element stream, parse what passed.

One module for every path that reads a received or stored data set — C-STORE (both upper
layers), STOW-RS and WADO-RS — so they accept and refuse the same things:

* :func:`inflate` — Deflated Explicit VR Little Endian, inflated piece by piece and given up
  as soon as it passes the ceiling (``YILIAN_MAX_INFLATED_BYTES``, and
  ``YILIAN_MAX_INFLATE_RATIO`` times the compressed size): a 191 kB file that inflates to
  192 MB is refused after the first few MB, never held whole.
* :func:`walk` — a structural walk of the element stream (tags, VRs, lengths, items and
  delimiters), decoding no value: every length lies inside its data set, item or sequence;
  every undefined-length sequence, item and encapsulated Pixel Data is closed; sequences nest
  no deeper than ``YILIAN_MAX_SEQUENCE_DEPTH``.  A data set that passes is whole, and pydicom
  can parse it without exhausting the stack.  ~20-40 µs for a small instance; a large one
  costs its element headers only (Pixel Data is skipped, the file is mapped, not read).
* :func:`read_dataset` — a stored file as a pydicom Dataset for WADO, after the same checks;
  :class:`Undecodable` instead of pydicom's RecursionError or an unbounded inflate.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
INFLATE_STEP = 1 << 20  # inflated bytes produced per step: the ceiling is checked this often

LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
                       b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
KNOWN_VRS = LONG_VRS | SHORT_VRS
ENCAPSULATED_VRS = frozenset({b"OB", b"OW", b""})  # "" in implicit VR


def _sequence_tags() -> frozenset[int]:
    """Tags the dictionary gives VR SQ: implicit VR (and UN) values pydicom parses as sequences."""
    from pydicom.datadict import DicomDictionary
    return frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")


SEQUENCE_TAGS = _sequence_tags()


@dataclass(frozen=True, slots=True)
class Limits:
    """How much a data set may ask of us (``YILIAN_MAX_INFLATED_BYTES``, ``YILIAN_MAX_INFLATE_RATIO``, ``YILIAN_MAX_SEQUENCE_DEPTH``)."""

    max_inflated_bytes: int = 256 * 1024**2
    max_inflate_ratio: int = 100
    max_sequence_depth: int = 64

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(settings.max_inflated_bytes, settings.max_inflate_ratio, settings.max_sequence_depth)


class Refused(ValueError):
    """The data set cannot be taken (or read) as it is; ``reason`` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Malformed(Refused):
    """Not a whole data set: a length past its end, an unclosed sequence or item, garbage."""


class TooDeep(Refused):
    """Sequences nested deeper than the limit."""


class TooLarge(Refused):
    """Inflates past the ceiling (a decompression bomb, or simply too large)."""


class Undecodable(Refused):
    """A stored instance the read paths cannot decode (refused at store time today, or damaged)."""


# --- inflate ------------------------------------------------------------------------------------

def inflate_ceiling(compressed_size: int, limits: Limits) -> int:
    return min(limits.max_inflated_bytes, max(compressed_size, 1) * limits.max_inflate_ratio)


def inflate_steps(chunks: Iterable[bytes | memoryview], ceiling: int) -> Iterator[bytes]:
    """Inflate raw deflate (PS3.5 A.5) from ``chunks``, at most :data:`INFLATE_STEP` bytes a step;
    :class:`TooLarge` once more than ``ceiling`` bytes came out, :class:`Malformed` if the stream
    is cut short or corrupt.  The caller may stop early (WADO metadata stops at Pixel Data)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        for chunk in chunks:
            data: bytes | memoryview = chunk
            while data and not inflater.eof:
                piece = inflater.decompress(data, INFLATE_STEP)
                data = inflater.unconsumed_tail
                total += len(piece)
                if total > ceiling:
                    raise TooLarge(f"deflated data set inflates past {ceiling} bytes")
                if piece:
                    yield piece
            if inflater.eof:
                return
    except zlib.error as exc:
        raise Malformed(f"deflated data set is corrupt ({exc})") from None
    raise Malformed("deflated data set is cut short")


def inflate(chunks: Iterable[bytes | memoryview], compressed_size: int, limits: Limits) -> bytes:
    """The whole inflated data set, or :class:`TooLarge` before holding more than the ceiling."""
    return b"".join(inflate_steps(chunks, inflate_ceiling(compressed_size, limits)))


# --- the structural walk ------------------------------------------------------------------------

class _Short(Malformed):
    """The buffer ends inside an element (a deflated header read asks for more)."""


class _Walk:
    __slots__ = ("buf", "explicit_head", "implicit_head", "max_depth", "raw", "tag", "u32", "wanted")

    def __init__(self, buf: memoryview, little: bool, max_depth: int, wanted: frozenset[int] | None) -> None:
        self.buf = buf
        self.max_depth = max_depth
        self.wanted = wanted
        self.raw: dict[int, memoryview] = {}
        order = "<" if little else ">"
        # One unpack per element header: (group, element, VR, 16-bit length) or (group, element, length).
        self.explicit_head = struct.Struct(order + "HH2sH").unpack_from
        self.implicit_head = struct.Struct(order + "HHI").unpack_from
        self.tag = struct.Struct(order + "HH").unpack_from
        self.u32 = struct.Struct(order + "I").unpack_from

    def elements(self, pos: int, end: int, explicit: bool, depth: int, *, in_item: bool = False,
                 stop_at: int | None = None) -> int:
        """Walk the elements of a data set or item from ``pos`` to ``end`` (exactly), or in an
        undefined-length item to its Item Delimitation; returns where it stopped."""
        buf, top, u32 = self.buf, depth == 0, self.u32
        wanted = self.wanted if top else None
        if explicit and pos + 6 <= end and bytes(buf[pos + 4:pos + 6]) not in KNOWN_VRS \
                and self.tag(buf, pos)[0] != 0xFFFE:
            explicit = False  # implicit VR in an explicit syntax: pydicom reads it so, and so do we
        head = self.explicit_head if explicit else self.implicit_head
        vr = b""
        while pos < end:
            if pos + 8 > end:
                raise _Short(f"element header cut short at byte {pos}")
            if explicit:
                group, element, vr, length = head(buf, pos)
            else:
                group, element, length = head(buf, pos)
            tag = group << 16 | element
            if stop_at is not None and tag >= stop_at:
                return pos
            start = pos
            if group == 0xFFFE:
                length = u32(buf, pos + 4)[0]
                if tag == ITEM_END and in_item:
                    return pos + 8
                if tag in (ITEM_END, SEQUENCE_END) and length == 0:
                    pos += 8  # a stray delimiter outside its place: harmless, pydicom skips it too
                    continue
                raise Malformed(f"item tag (FFFE,{element:04X}) outside a sequence at byte {pos}")
            if not explicit or vr in SHORT_VRS:
                pos += 8
            elif vr in LONG_VRS:
                if pos + 12 > end:
                    raise _Short(f"element header cut short at byte {pos}")
                length = u32(buf, pos + 8)[0]
                pos += 12
            else:
                raise Malformed(f"element ({group:04X},{element:04X}) has no valid VR at byte {pos}")
            if length == UNDEFINED:
                if tag == PIXEL_DATA and vr in ENCAPSULATED_VRS:
                    pos = self.fragments(pos, end, tag)
                elif vr in (b"SQ", b"UN", b""):  # UN of undefined length holds implicit VR LE items
                    pos = self.sequence(pos, end, explicit and vr == b"SQ", depth + 1, None, tag)
                    if wanted is not None and tag in wanted:
                        self.raw[tag] = buf[start:pos]  # a wanted sequence: the whole element, header too
                else:
                    raise Malformed(f"element ({group:04X},{element:04X}) {vr.decode()} of undefined length")
                continue
            if pos + length > end:
                raise _Short(f"({group:04X},{element:04X}) length {length} runs past the end of the "
                             f"{'data set' if top else 'item'}")
            if length:
                if vr == b"SQ" or not explicit and tag in SEQUENCE_TAGS:
                    self.sequence(pos, pos + length, explicit, depth + 1, pos + length, tag)
                    if wanted is not None and tag in wanted:
                        self.raw[tag] = buf[start:pos + length]  # a wanted sequence: the whole element
                elif vr == b"UN" and tag in SEQUENCE_TAGS:
                    # pydicom reads a UN whose tag the dictionary calls SQ as an implicit VR sequence:
                    # its depth counts; anything else wrong in it pydicom keeps as bytes.
                    with contextlib.suppress(Malformed):
                        self.sequence(pos, pos + length, False, depth + 1, pos + length, tag)
                elif wanted is not None and tag in wanted:
                    self.raw[tag] = buf[pos:pos + length]
            elif wanted is not None and tag in wanted:
                self.raw[tag] = buf[pos:pos]
            pos += length
        if in_item:
            raise _Short("an item of undefined length is never closed")
        return pos

    def sequence(self, pos: int, end: int, explicit: bool, depth: int, defined_end: int | None, tag: int) -> int:
        if depth > self.max_depth:
            raise TooDeep(f"sequences nested deeper than {self.max_depth} levels")
        buf = self.buf
        stop = defined_end if defined_end is not None else end
        while pos < stop:
            if pos + 8 > stop:
                break
            item, length = self.tag(buf, pos), self.u32(buf, pos + 4)[0]
            item_tag = item[0] << 16 | item[1]
            pos += 8
            if item_tag == SEQUENCE_END and defined_end is None:
                return pos
            if item_tag != ITEM:
                raise Malformed(f"sequence ({tag >> 16:04X},{tag & 0xFFFF:04X}) holds a non-item at byte {pos - 8}")
            if length == UNDEFINED:
                pos = self.elements(pos, stop, explicit, depth, in_item=True)
            elif pos + length > stop:
                raise _Short(f"an item of {length} bytes runs past the end of its sequence")
            else:
                self.elements(pos, pos + length, explicit, depth)
                pos += length
        if defined_end is not None and pos == defined_end:
            return pos
        raise _Short(f"sequence ({tag >> 16:04X},{tag & 0xFFFF:04X}) of undefined length is never closed"
                     if defined_end is None else "a sequence's items do not fill its length")

    def fragments(self, pos: int, end: int, tag: int) -> int:
        """Encapsulated Pixel Data: items of defined length up to the Sequence Delimitation Item."""
        buf = self.buf
        while pos + 8 <= end:
            group, element = self.tag(buf, pos)
            length = self.u32(buf, pos + 4)[0]
            pos += 8
            if group << 16 | element == SEQUENCE_END:
                return pos
            if group << 16 | element != ITEM or length == UNDEFINED:
                raise Malformed(f"encapsulated Pixel Data holds a non-fragment at byte {pos - 8}")
            if pos + length > end:
                raise _Short(f"a Pixel Data fragment of {length} bytes runs past the end of the data set")
            pos += length
        raise _Short("encapsulated Pixel Data is never closed (no Sequence Delimitation Item)")


def walk(data: bytes | memoryview | mmap.mmap, transfer_syntax: str, limits: Limits, *,
         wanted: frozenset[int] | None = None) -> dict[int, memoryview]:
    """Check that ``data`` (a data set, no File Meta; inflated if it was deflated) is whole and
    nests no deeper than the limit; raise a :class:`Refused`.  Returns the raw values of the
    ``wanted`` top-level tags (views into ``data``); of a sequence, the whole element (its
    header too), for pydicom to read."""
    view = memoryview(data)
    w = _Walk(view, transfer_syntax != EXPLICIT_BIG_ENDIAN, limits.max_sequence_depth, wanted)
    try:
        w.elements(0, len(view), transfer_syntax != IMPLICIT_VR_LITTLE_ENDIAN, 0)
    except struct.error:
        raise Malformed("element header cut short") from None
    except RecursionError:  # a depth limit set past what Python's stack allows
        raise TooDeep("sequences nested too deeply to walk") from None
    return w.raw


def header_end(data: bytes | memoryview, limits: Limits) -> int | None:
    """Where Pixel Data starts in explicit VR little endian ``data`` (a data set's beginning, the
    whole set, or a part of it); None if ``data`` ends before it."""
    view = memoryview(data)
    w = _Walk(view, True, limits.max_sequence_depth, None)
    try:
        pos = w.elements(0, len(view), True, 0, stop_at=PIXEL_DATA)
    except _Short:
        return None
    return pos if pos < len(view) else None


# --- files --------------------------------------------------------------------------------------

def data_set_offset(head: bytes | memoryview) -> int | None:
    """Where the data set starts in a Part 10 file (after its File Meta Information), if plain."""
    if len(head) < 144 or bytes(head[128:132]) != b"DICM" or bytes(head[132:138]) != b"\x02\x00\x00\x00UL":
        return None
    return 144 + int.from_bytes(head[140:144], "little")


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[memoryview]:
    """The file's bytes, mapped (pages are read only where the walk looks)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            yield memoryview(b"")
            return
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield memoryview(m)
    finally:
        # Views of it may live on in a traceback's frames: the mapping then goes with them.
        with contextlib.suppress(BufferError):
            m.close()


def _meta_end(part10: Any) -> int:
    """Where the data set starts in a file whose File Meta Information lacks its group length."""
    from pydicom.filereader import _read_file_meta_info, read_preamble
    try:
        read_preamble(part10, False)
        _read_file_meta_info(part10)
        return part10.tell()
    except Exception:  # noqa: BLE001 - whatever pydicom raises, there is no usable meta
        raise Malformed("no File Meta Information") from None


def _file_chunks(path: Path, offset: int, chunk: int = 1 << 16) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while data := f.read(chunk):
            yield data


def data_set_of(view: memoryview, transfer_syntax: str, limits: Limits) -> bytes | memoryview:
    """The data set of the Part 10 file ``view``: a view of it, or a deflated one inflated within the ceiling."""
    offset = data_set_offset(view[:144]) if len(view) >= 144 else None
    if offset is None:
        with io.BytesIO(view) as f:
            offset = _meta_end(f)
    if offset > len(view):
        raise Malformed("File Meta Information runs past the end of the file")
    data = view[offset:]
    if transfer_syntax != DEFLATED:
        return data
    step = 1 << 16
    return inflate((data[i:i + step] for i in range(0, len(data), step)), len(data), limits)


def check_part10(view: memoryview, transfer_syntax: str, limits: Limits) -> None:
    """:func:`walk` the data set of the Part 10 file ``view`` (a deflated one inflated within the ceiling)."""
    walk(data_set_of(view, transfer_syntax, limits), transfer_syntax, limits)


def check_file(path: Path, transfer_syntax: str, limits: Limits) -> None:
    """:func:`check_part10` of a stored or staged file, mapped (only the pages walked are read)."""
    with mapped(path) as view:
        check_part10(view, transfer_syntax, limits)


def read_dataset(path: Path, transfer_syntax: str, limits: Limits, *, stop_before_pixels: bool) -> Any:
    """A stored file as a pydicom Dataset, after the checks of a store; :class:`Undecodable` for
    one that fails them (stored before them, or damaged) or that pydicom cannot decode.

    A deflated file is inflated within the ceiling, and for a header only as far as Pixel Data.
    """
    from pydicom import dcmread
    from pydicom.filereader import read_dataset as pydicom_read_dataset, read_file_meta_info
    try:
        if transfer_syntax != DEFLATED:
            check_file(path, transfer_syntax, limits)
            return dcmread(path, stop_before_pixels=stop_before_pixels, defer_size=4096 if stop_before_pixels
                           else None)
        with open(path, "rb") as f:
            offset = data_set_offset(f.read(144))
        if offset is None:
            raise Undecodable("no File Meta Information")
        size = path.stat().st_size - offset
        data = bytearray()
        end: int | None = None
        for piece in inflate_steps(_file_chunks(path, offset), inflate_ceiling(size, limits)):
            data += piece
            if stop_before_pixels and (end := header_end(data, limits)) is not None:
                break
        header = bytes(data[:end]) if end is not None else bytes(data)
        walk(header, transfer_syntax, limits)
        ds = pydicom_read_dataset(io.BytesIO(header), is_implicit_VR=False, is_little_endian=True)
        ds.file_meta = read_file_meta_info(path)
        ds.set_original_encoding(False, True)
        return ds
    except Refused as exc:
        raise Undecodable(exc.reason) from None
    except RecursionError:
        raise Undecodable("sequences nested too deeply to decode") from None
