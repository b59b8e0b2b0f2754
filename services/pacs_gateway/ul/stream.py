"""One connection as a stream of whole PDUs: an asyncio Protocol that assembles them (PS3.8 9.3.1).

Reading through ``asyncio.StreamReader`` woke the association's coroutine for every TCP
segment (DCMTK sends a P-DATA-TF's header and its body in two writes), and cost two
``readexactly`` calls, two copies and two idle-timer reschedules per PDU.  Here the bytes are
framed inside the protocol callback: a PDU that arrives whole is handed on as a slice of the
received chunk, one split across reads is filled into a buffer of its own length, and the
coroutine is woken once with every PDU that is complete.

The first PDU (the A-ASSOCIATE-RQ) is read on its own and what follows it is held until the
acceptor decides: :meth:`PDUStream.read_pdus` frames the rest, :meth:`PDUStream.relay` hands
it on raw (the association goes to pynetdicom).  Reading pauses while more than
``high_water`` bytes wait for the coroutine, so a huge instance never piles up in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from . import pdu
from .pdu import ProtocolError


class PDUStream(asyncio.Protocol):
    def __init__(self, serve: Callable[[PDUStream], Awaitable[None]], *, first_limit: int, high_water: int) -> None:
        self._serve = serve
        self.limit = first_limit  # largest PDU length accepted; the first PDU is the A-ASSOCIATE-RQ
        self.high_water = high_water
        self.idle_timeout: float | None = None  # peer silence while receiving (ARTIM once associated)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._ready: list[Any] = []  # (PDU type, body) pairs, or raw chunks when relaying
        self._queued = 0  # bytes in _ready
        self._error: BaseException | None = None  # raised once _ready is consumed
        self._waiter: asyncio.Future[None] | None = None
        self._waiting_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._head = bytearray()  # a PDU header split across reads
        self._body: bytearray | None = None  # a PDU body split across reads, and its type and fill
        self._type = self._filled = 0
        self._first = True
        self._held: list[bytes] | None = None  # what came after the first PDU, before the acceptor decided
        self._relaying = False
        self._read_paused = self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    # --- protocol callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.closed = self._loop.create_future()
        self._loop.create_task(self._serve(self))

    def data_received(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        elif self._relaying:
            self._deliver(data, len(data))
        elif self._error is None:
            try:
                self._frame(data)
            except ProtocolError as exc:  # nothing after a broken PDU is read
                self._fail(exc)

    def eof_received(self) -> bool:
        partial = self._body[:self._filled] if self._body is not None else self._head
        self._fail(asyncio.IncompleteReadError(bytes(partial), None))
        # Half-open like StreamReaderProtocol (a relayed peer may still be answered); TLS cannot be.
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc if exc is not None else ConnectionResetError("connection lost"))
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost"))
        self._drain_waiters.clear()
        if self._timer is not None:
            self._timer.cancel()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # --- framing -----------------------------------------------------------------------------
    def _frame(self, data: bytes) -> None:
        view, pos, end = memoryview(data), 0, len(data)
        while pos < end:
            if self._held is not None:  # the first PDU is in: the rest waits for the acceptor
                self._held.append(data[pos:])
                return
            body = self._body
            if body is not None:
                n = min(end - pos, len(body) - self._filled)
                body[self._filled:self._filled + n] = view[pos:pos + n]
                self._filled += n
                pos += n
                if self._filled == len(body):
                    self._body = None
                    self._complete(self._type, body)
                continue
            if self._head or end - pos < 6:
                take = min(6 - len(self._head), end - pos)
                self._head += view[pos:pos + take]
                pos += take
                if len(self._head) < 6:
                    return
                pdu_type, length = pdu.HEADER.unpack(self._head)
                self._head.clear()
            else:
                pdu_type, length = pdu.HEADER.unpack_from(view, pos)
                pos += 6
            if pdu_type not in pdu.PDU_TYPES:
                raise ProtocolError(f"unrecognised PDU type 0x{pdu_type:02X}", pdu.REASON_UNRECOGNIZED_PDU)
            if length > self.limit:
                raise ProtocolError(f"PDU of {length} bytes is larger than {self.limit}")
            if end - pos >= length:  # whole in this read: a slice, no copy
                self._complete(pdu_type, view[pos:pos + length])
                pos += length
            else:
                self._body, self._type, self._filled = bytearray(length), pdu_type, 0

    def _complete(self, pdu_type: int, body: Any) -> None:
        if self._first:
            self._first, self._held = False, []
        self._deliver((pdu_type, body), len(body))

    def _deliver(self, item: Any, size: int) -> None:
        self._ready.append(item)
        self._queued += size
        if self._queued > self.high_water and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the coroutine's side ------------------------------------------------------------------
    async def receive(self) -> list[Any]:
        """Every PDU (or raw chunk) received since the last call, waiting for at least one.

        Raises what ended the stream (a :class:`ProtocolError`, ``IncompleteReadError`` at the
        peer's end, a connection error) once everything before it has been returned, and
        ``TimeoutError`` when the peer stays silent for ``idle_timeout`` seconds.
        """
        if not self._ready:
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            if self.idle_timeout is not None:
                # One timer per timeout period, not one per wait: it re-arms itself while data keeps coming.
                self._waiting_since = self._loop.time()
                if self._timer is None:
                    self._timer = self._loop.call_at(self._waiting_since + self.idle_timeout, self._idle)
            try:
                await self._waiter
            finally:
                self._waiter = None
            if not self._ready:
                assert self._error is not None
                raise self._error
        ready, self._ready, self._queued = self._ready, [], 0
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return ready

    def _idle(self) -> None:
        self._timer = None
        waiter, timeout = self._waiter, self.idle_timeout
        if waiter is None or waiter.done() or timeout is None:
            return  # not waiting on the peer now: the next wait arms the timer again
        due = self._waiting_since + timeout
        if self._loop.time() >= due:
            waiter.set_exception(TimeoutError())
        else:
            self._timer = self._loop.call_at(due, self._idle)

    def read_pdus(self, limit: int) -> None:
        """Associated natively: frame what came after the A-ASSOCIATE-RQ, PDUs up to ``limit`` bytes."""
        self.limit = limit
        held, self._held = self._held or [], None
        for data in held:
            self.data_received(data)

    def relay(self) -> None:
        """Handed off: :meth:`receive` returns raw chunks from now on, starting with what was held."""
        held, self._held = self._held or [], None
        self._relaying = True
        for data in held:
            self._deliver(data, len(data))

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        if self.closed is not None and self.closed.done():
            raise ConnectionResetError("connection lost")
        if self._write_paused:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    @property
    def queued(self) -> int:
        """Bytes received and framed that the association has not taken yet."""
        return self._queued

    def peername(self) -> Any:
        return self.transport.get_extra_info("peername") if self.transport is not None else None

    async def close(self, timeout: float = 2) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.closed is not None:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
