"""Whether the centre answers the edge, and since when.  I/O free.

Every request of :class:`~services.edge.link.CentreLink` reports here.  The technician reads
"connected since 09:12" or "outage since 10:03" — the first failure after the last answer, not
the latest one, so an hour-long outage says an hour.  A centre that answers 401/403 is reachable
but refuses this edge (its token revoked or wrong): a different fix, so a different state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..core.times import iso

log = logging.getLogger("yilian.edge")

UNKNOWN, CONNECTED, OUTAGE, REFUSED = "unknown", "connected", "outage", "refused"


class LinkWatch:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.state = UNKNOWN
        self.since: float | None = None  # when the current state began
        self.last_answer: float | None = None
        self.last_error: str | None = None
        self._on_restored: list[Callable[[], None]] = []

    def on_restored(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` when the centre takes the edge again after an outage or a refusal (the
        forwarder and the worklist copy retry at once instead of waiting out their backoff)."""
        self._on_restored.append(callback)

    def saw(self, status: int | None, error: str | None = None) -> None:
        """One request's outcome: the HTTP status, or None when no answer came (``error`` says why)."""
        now = self.clock()
        if status is None or status >= 500 or status in (408, 429):
            state = OUTAGE
        elif status in (401, 403):
            state = REFUSED
        else:
            state = CONNECTED
        if status is not None and state != OUTAGE:
            self.last_answer = now
        if state != CONNECTED:
            self.last_error = error or f"HTTP {status}"
        if state != self.state:
            was, self.state, self.since = self.state, state, now
            if state == CONNECTED and was in (OUTAGE, REFUSED):
                log.info("the link to the centre is back", extra={"state": state})
                for callback in self._on_restored:
                    callback()

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "since": iso(self.since) if self.since else None,
                "last_answer_at": iso(self.last_answer) if self.last_answer else None,
                "last_error": self.last_error}
