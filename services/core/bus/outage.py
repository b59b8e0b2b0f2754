"""A broker outage: one line at its start, one at its end, the rest counted.

While the broker is away aiokafka logs an error for every retry of every connection (about
2,000 lines per consumer process in a 10 s outage).  The first line that says the broker
cannot be reached opens the outage: one warning names it.  Until a ping answers again and
the clients have been quiet for a moment, aiokafka's warnings and errors, and the bus's own
retry lines, are counted instead of written (``yilian_bus_outage_log_lines_total``); the end
is one line with the duration and the count.  Logging is process-wide, so there is one :data:`OUTAGE` per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..metrics import Family, Sample

log = logging.getLogger("yilian.bus")

CLIENT_LOGGER = "aiokafka"
# aiokafka's lines that mean "the broker cannot be reached" (a record's unformatted message)
UNREACHABLE = ("Unable connect to node", "Unable to update metadata", "Failed fetch messages",
               "Group Coordinator Request failed", "Marking the coordinator dead", "Error sending",
               "Heartbeat send request failed", "Heartbeat session expired", "Unable to request metadata",
               "Got error produce response", "Coordinator dead")
PROBE_INTERVAL = 0.5  # seconds between pings while the broker is away
# The outage ends when a ping answers and the clients have been quiet this long: a client still
# reconnecting logs for a moment after the broker is back, which is the same outage.
QUIET = 1.5

Ping = Callable[[], Awaitable[None]]


class Outage(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.since: float | None = None  # monotonic time the current outage began
        self.outages = 0
        self.counted = 0  # log lines counted instead of written, over every outage
        self._counted_now = 0
        self._last_line = 0.0  # monotonic time of the last line counted
        self._pings: list[Ping] = []
        self._on_end: list[Callable[[], Awaitable[None]]] = []
        self._on_begin: list[Callable[[], None]] = []
        self._watch: asyncio.Task[None] | None = None
        self._installed = False

    @property
    def active(self) -> bool:
        return self.since is not None

    # --- who watches ----------------------------------------------------------------
    def attach(self, ping: Ping, on_end: Callable[[], Awaitable[None]], on_begin: Callable[[], None]) -> None:
        """A started bus: ``on_begin`` runs when an outage begins, its ``ping`` tells the end,
        ``on_end`` runs after it."""
        self._install()
        self._pings.append(ping)
        self._on_end.append(on_end)
        self._on_begin.append(on_begin)

    def detach(self, ping: Ping, on_end: Callable[[], Awaitable[None]], on_begin: Callable[[], None]) -> None:
        for hooks, hook in ((self._pings, ping), (self._on_end, on_end), (self._on_begin, on_begin)):
            with contextlib.suppress(ValueError):
                hooks.remove(hook)
        if not self._pings:  # no bus left to ask: the outage is nobody's now
            self.since = None
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None

    def _install(self) -> None:
        # A logger's filter sees only its own records, not its children's: filter each one.
        if self._installed:
            return
        self._installed = True
        for name in [CLIENT_LOGGER, *logging.Logger.manager.loggerDict]:
            if name == CLIENT_LOGGER or name.startswith(CLIENT_LOGGER + "."):
                logging.getLogger(name).addFilter(self)

    # --- the filter -----------------------------------------------------------------
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if not self.active:
            if not str(record.msg).startswith(UNREACHABLE):
                return True
            self.begin(record.getMessage())
        self._count()
        return False

    def quiet(self, logger: logging.Logger, message: str, extra: dict[str, Any],
              level: int = logging.WARNING) -> None:
        """Log ``message`` unless an outage is on, in which case count it."""
        if self.active:
            self._count()
        else:
            logger.log(level, message, extra=extra)

    def _count(self) -> None:
        self._last_line = time.monotonic()
        self.counted += 1
        self._counted_now += 1

    # --- start and end --------------------------------------------------------------
    def begin(self, reason: str) -> None:
        if self.active:
            return
        self.since = time.monotonic()
        self.outages += 1
        self._counted_now = 0
        log.warning("kafka broker unreachable; its client's errors are counted, not logged, until it answers",
                    extra={"reason": reason})
        for on_begin in list(self._on_begin):
            on_begin()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not in a loop (a client thread): the next line from the loop starts the watch
        if self._watch is None or self._watch.done() or self._watch.get_loop() is not loop:
            self._watch = loop.create_task(self._wait_for_broker(), name="kafka-outage")

    async def _wait_for_broker(self) -> None:
        while self.active:
            await asyncio.sleep(PROBE_INTERVAL)
            if not self._pings:
                self.since = None  # no bus left to ask: nothing to report
                return
            try:
                await self._pings[-1]()
            except Exception:  # noqa: BLE001 - still away
                continue
            if time.monotonic() - self._last_line >= QUIET:
                await self.end()

    async def end(self) -> None:
        if self.since is None:
            return
        seconds = time.monotonic() - self.since
        self.since = None
        log.info("kafka broker reachable again", extra={
            "outage_s": round(seconds, 2), "log_lines_counted": self._counted_now})
        for on_end in list(self._on_end):
            try:
                await on_end()
            except Exception as exc:  # noqa: BLE001 - each bus deals with its own failure
                log.warning("after the kafka outage", extra={"reason": repr(exc)})

    def figures(self) -> list[Family]:
        return [
            Family("yilian_bus_outages_total", "counter", "Times this process found the Kafka broker unreachable",
                   [Sample("yilian_bus_outages_total", {}, self.outages)]),
            Family("yilian_bus_outage_log_lines_total", "counter",
                   "Kafka client and retry log lines counted instead of written during broker outages",
                   [Sample("yilian_bus_outage_log_lines_total", {}, self.counted)]),
            Family("yilian_bus_broker_reachable", "gauge", "0 while this process finds the Kafka broker unreachable",
                   [Sample("yilian_bus_broker_reachable", {}, 0 if self.active else 1)]),
        ]


OUTAGE = Outage()
