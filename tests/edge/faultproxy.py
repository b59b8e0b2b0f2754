"""A poor township link between two loopback ports: latency, a bandwidth cap, connections cut at
random mid-transfer, and total outages.  A real TCP proxy; the edge and the centre talk through it
as they would through a VPN that keeps failing."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time


class Bucket:
    """A link-wide bandwidth cap (both directions share the line)."""

    def __init__(self, bytes_per_second: float | None) -> None:
        self.rate = bytes_per_second
        self.tokens = 0.0
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        if not self.rate:
            return
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.rate / 10, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= n or self.tokens >= self.rate / 10:
                    self.tokens -= n
                    return
                await asyncio.sleep((min(n, self.rate / 10) - self.tokens) / self.rate)


class FaultProxy:
    def __init__(self, upstream_port: int, *, latency: float = 0.0, bytes_per_second: float | None = None,
                 cut_every_bytes: tuple[int, int] | None = None, seed: int = 7) -> None:
        self.upstream_port = upstream_port
        self.latency = latency
        self.bucket = Bucket(bytes_per_second)
        self.cut_every = cut_every_bytes  # each connection is cut after a random byte count in this range
        self.rng = random.Random(seed)
        self.down = False
        self.port = 0
        self.bytes = {"up": 0, "down": 0}  # client→upstream, upstream→client
        self.connections = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.outage(True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def outage(self, down: bool) -> None:
        """Down: new connections are dropped at once and the open ones cut."""
        self.down = down
        if down:
            for a, b in list(self._live):
                for w in (a, b):
                    w.transport.abort()
            self._live.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        pair = (writer, up_writer)
        self._live.add(pair)
        budget = [self.rng.randint(*self.cut_every)] if self.cut_every else None
        try:
            await asyncio.gather(self._pipe(reader, up_writer, "up", budget, pair),
                                 self._pipe(up_reader, writer, "down", budget, pair))
        finally:
            self._live.discard(pair)
            for w in pair:
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str,
                    budget: list[int] | None, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        # Latency: every chunk leaves ``latency`` seconds after it came, in order.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                await self.bucket.take(len(data))
                if self.down or pair not in self._live:
                    return
                writer.write(data)
                self.bytes[direction] += len(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(16384)
                if budget is not None:
                    budget[0] -= len(data)
                    if budget[0] <= 0:
                        self.cuts += 1
                        for w in pair:
                            w.transport.abort()
                        return
                await queue.put((time.monotonic() + self.latency, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender
