"""``multipart/related`` (RFC 2387) as PS3.18 uses it: the Accept header, and streamed parts.

:func:`parse_accept` reads ``Accept`` into media ranges with their ``type`` and
``transfer-syntax`` parameters; :class:`MultipartWriter` writes parts to an aiohttp
``StreamResponse`` as they come (a study is never whole in memory).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class MediaRange:
    media_type: str  # "multipart/related", "application/dicom+json", "*/*", ...
    type: str | None = None  # the multipart ``type`` parameter
    transfer_syntax: str | None = None
    q: float = 1.0


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_media_type(text: str) -> tuple[str, dict[str, str]]:
    head, *params = _split(text, ";")
    out = {}
    for p in params:
        name, _, value = p.partition("=")
        out[name.strip().lower()] = value.strip().strip('"')
    return head.strip().lower(), out


def parse_accept(header: str | None) -> list[MediaRange]:
    """The acceptable media ranges, best first; ``*/*`` when the header is missing or empty."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = []
    for item in _split(header, ","):
        media_type, params = parse_media_type(item)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality > 0:
            ranges.append(MediaRange(media_type, (params.get("type") or "").lower() or None,
                                     params.get("transfer-syntax"), quality))
    return sorted(ranges, key=lambda r: -r.q)


class MultipartWriter:
    """Writes ``multipart/related; type=...`` parts to a prepared streaming response."""

    def __init__(self, part_type: str) -> None:
        self.part_type = part_type
        self.boundary = uuid.uuid4().hex

    def content_type(self, transfer_syntax: str | None = None) -> str:
        value = f'multipart/related; type="{self.part_type}"; boundary={self.boundary}'
        return value + (f"; transfer-syntax={transfer_syntax}" if transfer_syntax else "")

    async def part(self, response: web.StreamResponse, chunks: AsyncIterator[bytes] | bytes, *,
                   content_type: str, location: str | None = None) -> None:
        head = f"--{self.boundary}\r\nContent-Type: {content_type}\r\n"
        if location:
            head += f"Content-Location: {location}\r\n"
        await response.write((head + "\r\n").encode())
        if isinstance(chunks, bytes):
            await response.write(chunks)
        else:
            async for chunk in chunks:
                await response.write(chunk)
        await response.write(b"\r\n")

    async def close(self, response: web.StreamResponse) -> None:
        await response.write(f"--{self.boundary}--\r\n".encode())
        await response.write_eof()
