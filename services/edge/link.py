"""The edge's link to the centre: HTTPS (TLS verified) with the edge's bearer token.

Everything the edge asks of the centre goes through the centre's public API, as any client's
would: QIDO-RS for what the centre already holds of a study, STOW-RS to send instances (gzip on
the wire, under the bandwidth cap), and the edge endpoints (a study is complete; heartbeat; the
worklist copy; MPPS reported at the edge; a result's objects for the terminal and their delivery).
A failure the next attempt may cure (no route, reset, timeout, 5xx, 429) is :class:`LinkDown`;
a refusal that will not change (400, 401, 403, 409) is :class:`LinkRefused`.
"""

from __future__ import annotations

import json
import ssl
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from .linkstate import OUTAGE, LinkWatch
from .throttle import Throttle

SOP_INSTANCE_UID = "00080018"
FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE = "00081198", "00081199"
REFERENCED_SOP_INSTANCE_UID, FAILURE_REASON = "00081155", "00081197"
CHUNK = 1 << 16


class LinkError(Exception):
    pass


class LinkDown(LinkError):
    """The centre could not be reached or did not answer; try again later."""


class LinkRefused(LinkError):
    """The centre answered and refused; the same request will be refused again."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One instance to send: its SOP Instance UID and a way to read its Part 10 bytes."""

    sop_instance_uid: str
    size: int
    chunks: Any  # () -> AsyncIterator[bytes]


@dataclass
class StowOutcome:
    stored: set[str]
    failed: dict[str, int]  # SOP Instance UID -> Failure Reason
    wire_bytes: int


class CentreLink:
    def __init__(self, base_url: str, token: str, *, throttle: Throttle | None = None,
                 ca_file: str | None = None, timeout: float = 300.0, compress: bool = True,
                 watch: LinkWatch | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.watch = watch or LinkWatch()  # every request's outcome: the status page's link state
        self.token = token
        self.throttle = throttle or Throttle(None)
        self.compress = compress
        ssl_ctx: ssl.SSLContext | bool = True
        if self.base.startswith("https:"):
            ssl_ctx = ssl.create_default_context(cafile=ca_file)  # verified, always
        self._ssl = ssl_ctx
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=15, sock_read=60)
        self._session: aiohttp.ClientSession | None = None

    @property
    def down(self) -> bool:
        """The last call found no centre (no answer, or 5xx/408/429)."""
        return self.watch.state == OUTAGE

    def on_restored(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` when a call is answered again after an outage or a refusal."""
        self.watch.on_restored(callback)

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, headers={"Authorization": f"Bearer {self.token}"},
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=4))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "open() the link first"
        return self._session

    async def _request(self, method: str, path: str, *, answers: tuple[int, ...] = (),
                       **kw: Any) -> tuple[int, bytes]:
        try:
            async with self.session.request(method, self.base + path, **kw) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.watch.saw(None, f"{type(exc).__name__}: {exc}")
            raise LinkDown(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        self.watch.saw(status, f"{method} {path}: HTTP {status}" if status >= 400 else None)
        if status >= 500 or status in (408, 429):
            raise LinkDown(f"{method} {path}: HTTP {status}: {_detail(body)}")
        if status >= 400 and status not in answers:
            raise LinkRefused(status, _detail(body))
        return status, body

    async def held_instances(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs of ``study_uid`` the centre already holds (none: the empty set)."""
        status, body = await self._request(
            "GET", f"/dicomweb/studies/{study_uid}/instances", params={"includefield": SOP_INSTANCE_UID},
            headers={"Accept": "application/dicom+json"}, answers=(404,))
        if status in (204, 404) or not body:  # 404: the centre has no such study (yet)
            return set()
        return {str(item[SOP_INSTANCE_UID]["Value"][0]) for item in json.loads(body)
                if item.get(SOP_INSTANCE_UID, {}).get("Value")}

    async def worklist(self, since: str | None, offset: int = 0) -> dict[str, Any]:
        """A page of the organisation's orders: all open ones (``since`` None), or those changed since."""
        params: dict[str, Any] = {"offset": offset, **({"since": since} if since else {})}
        _, body = await self._request("GET", "/api/v1/edge/worklist", params=params)
        return json.loads(body)

    async def procedure_step(self, report: dict[str, Any]) -> dict[str, Any]:
        """An MPPS status a local modality reported: the centre keeps it once (a resend is a no-op)."""
        _, body = await self._request("POST", "/api/v1/edge/procedure-steps", json=report)
        return json.loads(body)

    async def stow(self, study_uid: str, instances: Sequence[Outgoing]) -> StowOutcome:
        """STOW-RS ``instances`` into ``study_uid``; which were stored and which refused."""
        boundary = uuid.uuid4().hex
        sent = [0]
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Accept": "application/dicom+json"}
        if self.compress:
            headers["Content-Encoding"] = "gzip"
        body = self._body(boundary, instances, sent)
        # 409: nothing stored; the body says why for each instance (PS3.18 10.5.3)
        _, raw = await self._request("POST", f"/dicomweb/studies/{study_uid}", data=body, headers=headers,
                                     answers=(409,))
        return _stow_outcome(raw, sent[0])

    async def _body(self, boundary: str, instances: Sequence[Outgoing], sent: list[int]) -> AsyncIterator[bytes]:
        gz = zlib.compressobj(6, zlib.DEFLATED, 31) if self.compress else None

        async def out(data: bytes) -> AsyncIterator[bytes]:
            data = gz.compress(data) if gz is not None else data
            if data:
                await self.throttle.take(len(data))
                sent[0] += len(data)
                yield data

        for item in instances:
            async for piece in out(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()):
                yield piece
            async for chunk in item.chunks():
                async for piece in out(chunk):
                    yield piece
            async for piece in out(b"\r\n"):
                yield piece
        async for piece in out(f"--{boundary}--\r\n".encode()):
            yield piece
        if gz is not None:
            tail = gz.flush()
            await self.throttle.take(len(tail))
            sent[0] += len(tail)
            yield tail

    async def complete(self, study_uid: str, instances: int) -> dict[str, Any]:
        _, body = await self._request("POST", f"/api/v1/edge/studies/{study_uid}/complete",
                                      json={"instances": instances})
        return json.loads(body)

    async def heartbeat(self, status: dict[str, Any]) -> None:
        await self._request("POST", "/api/v1/edge/heartbeat", json=status)

    async def result_objects(self, result_id: str) -> tuple[int, bytes]:
        """A result's SR and PDF for the clinic's terminal (multipart/related); 404: nothing for the
        terminal, 409: already stored there — both answers, not errors."""
        return await self._request("GET", f"/api/v1/results/{result_id}/objects",
                                   headers={"Accept": 'multipart/related; type="application/dicom"'},
                                   answers=(404, 409))

    async def result_delivered(self, result_id: str, terminal: str, sop_instance_uids: list[str]) -> None:
        """The terminal stored the result's objects (Success): the centre marks its edge delivery delivered."""
        await self._request("POST", f"/api/v1/edge/results/{result_id}/delivered",
                            json={"terminal": terminal, "sop_instance_uids": sop_instance_uids})


def _detail(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return str(doc.get("detail") or doc.get("title") or doc)
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def _stow_outcome(raw: bytes, wire_bytes: int) -> StowOutcome:
    doc = json.loads(raw) if raw else {}
    stored = {str(i[REFERENCED_SOP_INSTANCE_UID]["Value"][0])
              for i in doc.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])}
    failed = {str(i[REFERENCED_SOP_INSTANCE_UID]["Value"][0]): int(i[FAILURE_REASON]["Value"][0])
              for i in doc.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
              if i.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value")}
    return StowOutcome(stored, failed, wire_bytes)
