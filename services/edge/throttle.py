"""A bandwidth cap for the clinic's line: a token bucket over bytes.  I/O free but for sleeping.

The edge must not take the whole of a township's uplink: the clinic still needs it for its HIS
and the phone.  ``take(n)`` waits until ``n`` bytes may go; the bucket holds at most a quarter of
a second's worth (or one chunk), so a burst after an idle minute stays short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Throttle:
    def __init__(self, bytes_per_second: float | None, *, chunk: int = 1 << 16,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = bytes_per_second if bytes_per_second and bytes_per_second > 0 else None
        self.capacity = max(float(chunk), (self.rate or 0) / 4)
        self.clock = clock
        self.tokens = self.capacity
        self.stamp = clock()
        self._lock = asyncio.Lock()

    def wait_for(self, n: int) -> float:
        """Seconds to wait before ``n`` more bytes may be sent (0: now); takes them when 0."""
        if self.rate is None:
            return 0.0
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= min(n, self.capacity):
            self.tokens -= n  # may go negative for a chunk larger than the bucket: the debt is paid later
            return 0.0
        return (min(n, self.capacity) - self.tokens) / self.rate

    async def take(self, n: int) -> None:
        async with self._lock:
            while (delay := self.wait_for(n)) > 0:
                await asyncio.sleep(delay)
