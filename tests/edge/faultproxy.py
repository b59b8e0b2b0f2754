"""A poor township link between two loopback ports: latency, a bandwidth cap, connections cut at
random mid-transfer, and total outages.  A real TCP proxy; the edge and the centre talk through it
as they would through a VPN that keeps failing.  Test and benchmark tooling (``bench/edge.py``
imports it from here), never imported by the product."""

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
                 cut_every_bytes: tuple[int, int] | None = None, cut_mean_seconds: float | None = None,
                 seed: int = 7) -> None:
        self.upstream_port = upstream_port
        self.latency = latency
        self.bucket = Bucket(bytes_per_second)
        self.cut_every = cut_every_bytes  # each connection is cut after a random byte count in this range
        # The line drops at random moments (exponential gaps of this mean), cutting whatever is open:
        # a transfer's chance to get through falls with its duration, as on a flaky VPN.
        self.cut_mean_seconds = cut_mean_seconds
        self.drops = 0  # random drops of the line (each cuts the connections open then)
        self.rng = random.Random(seed)
        self.down = False
        self.port = 0
        self.bytes = {"up": 0, "down": 0}  # client→upstream, upstream→client
        self.connections = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._dropper: asyncio.Task[None] | None = None

    @property
    def wire_bytes(self) -> int:
        return self.bytes["up"] + self.bytes["down"]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.cut_mean_seconds:
            self.drop_at_random(self.cut_mean_seconds)

    def drop_at_random(self, mean_seconds: float, seed: int | None = None) -> None:
        """From now on, drop the line at random moments (``seed``: the same schedule from now)."""
        if self._dropper is not None:
            self._dropper.cancel()
        self.cut_mean_seconds = mean_seconds
        if seed is not None:
            self.rng = random.Random(seed)
        self._dropper = asyncio.create_task(self._drop_at_random())

    async def stop(self) -> None:
        if self._dropper is not None:
            self._dropper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dropper
        self.outage(True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def outage(self, down: bool) -> None:
        """Down: new connections are dropped at once and the open ones cut."""
        self.down = down
        if down:
            self._cut_all()

    def _cut_all(self) -> int:
        live = list(self._live)
        for a, b in live:
            for w in (a, b):
                w.transport.abort()
        self._live.clear()
        return len(live)

    async def _drop_at_random(self) -> None:
        assert self.cut_mean_seconds
        while True:
            await asyncio.sleep(self.rng.expovariate(1 / self.cut_mean_seconds))
            self.drops += 1
            self.cuts += self._cut_all()

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
