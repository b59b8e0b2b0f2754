"""When to try a failed send again (a result's delivery, a storage commitment report):
exponential backoff with full jitter, up to a horizon.

Full jitter (a uniform wait between 0 and the exponential cap) spreads the retries of many
sends that failed together, e.g. when a township's network comes back.  I/O free.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    first_delay: float
    max_delay: float
    horizon: float

    def cap(self, attempt: int) -> float:
        """The longest wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_delay, self.first_delay * (2 ** min(attempt - 1, 60)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, self.cap(attempt))

    def next_attempt(self, *, attempt: int, now: float, started: float,
                     rng: random.Random | None = None) -> float | None:
        """When to try again after failed attempt ``attempt``; None once past the horizon (dead letter)."""
        if now - started >= self.horizon:
            return None
        at = now + self.delay(attempt, rng)
        # The last try happens at the horizon rather than never.
        return min(at, started + self.horizon)
