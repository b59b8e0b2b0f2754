"""The monitor service: consumer group ``monitor`` keeps the read model, durable in the store.

Each event is applied in one transaction with ``first_time("monitor", event.id)``, so a
redelivered event changes nothing.  :func:`replay` rebuilds the read model from the event
log into another (fresh) store through the same projection.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo

from ..core.consortium import Consortium
from ..core.events import Event
from ..core.localtime import zone
from ..core.metrics import metrics_of
from ..core.runtime import Runtime
from ..core.settings import env_float
from ..core.store.port import Store, Transaction
from . import facts, readmodel
from .readmodel import iso

# The monitor's read model and the figures' and settlement's facts, one projection of one log.
TYPES = tuple(dict.fromkeys((*readmodel.TYPES, *facts.TYPES)))

log = logging.getLogger("yilian.monitor")

GROUP = "monitor"
META = "monitor_meta"
SETTINGS_KEY = "monitor.settings"
# Retired: the monitor's day followed this fixed offset; it now follows the consortium's zone.
RETIRED_OFFSET = "YILIAN_MONITOR_UTC_OFFSET_HOURS"


@dataclass(frozen=True)
class MonitorSettings:
    sla_risk_fraction: float = 0.8  # the same fraction the workflow flags with
    stream_interval: float = 1.0  # the SSE stream's poll of the read model, seconds
    stream_refresh: float = 30.0  # push even without events: risks move with the clock
    clock: Callable[[], float] = time.time

    @classmethod
    def from_env(cls, **overrides) -> MonitorSettings:
        values = dict(sla_risk_fraction=env_float("YILIAN_SLA_RISK_FRACTION", 0.8),
                      stream_interval=env_float("YILIAN_MONITOR_STREAM_SECONDS", 1.0))
        values.update(overrides)
        return cls(**values)


def settings_of(rt: Runtime) -> MonitorSettings:
    settings = rt.shared.get(SETTINGS_KEY)
    if settings is None:
        settings = rt.shared[SETTINGS_KEY] = MonitorSettings.from_env()
        if os.environ.get(RETIRED_OFFSET, "").strip():
            # Ignored rather than obeyed: two settings for one zone would drift apart.
            log.warning("%s is retired and ignored: the monitor's day and hours follow the consortium's "
                        "time zone, %s (YILIAN_TIMEZONE or the consortium file's timezone)",
                        RETIRED_OFFSET, rt.local_time.name)
    return settings


def sla_lookup(consortium: Consortium) -> readmodel.SlaOf:
    return lambda kind, priority: consortium.sla.get(kind, {}).get(priority)


def subscribed_types(known: list[str]) -> list[str]:
    """The projection's event types that have a schema (delivery events land later)."""
    return [t for t in TYPES if t in known]


async def apply_in(tx: Transaction, event: Event, consortium: Consortium, *, group: str = GROUP,
                   tz: tzinfo | None = None) -> bool:
    """Apply ``event`` to the read model inside ``tx``; False if it was already applied."""
    if not await tx.first_time(group, event.id):
        return False
    docs = {key: await tx.get(*key) for key in readmodel.keys(event)}
    for collection, doc in readmodel.apply(event, docs, sla_lookup(consortium)):
        await tx.put(collection, doc)
    await _apply_facts(tx, event, consortium, tz)
    # A change marker, not a counter: several monitor instances may write it.
    await tx.put(META, {"id": "state", "marker": uuid.uuid4().hex, "last_event_id": event.id,
                        "last_event_time": event.time})
    return True


async def _apply_facts(tx: Transaction, event: Event, consortium: Consortium, tz: tzinfo | None) -> None:
    wanted = facts.keys(event)
    if not wanted:
        return
    docs = {key: await tx.get(*key) for key in wanted}
    posts = event.type in ("report.signed", "consultation.concluded", "settlement.entry_voided")
    closed = {m["id"] for m in await tx.find(facts.MONTHS)} if posts else set()
    entries = None
    if event.type == "settlement.month_closed":
        entries = await tx.find(facts.LEDGER, {"posted_month": event.data["month"]})
    calendar = facts.Calendar(tz or zone(consortium.timezone))
    for collection, doc in facts.apply(event, docs, consortium, calendar, closed, entries):
        await tx.put(collection, doc)


async def replay(source: Store, target: Store, consortium: Consortium, *, batch: int = 500,
                 tz: tzinfo | None = None) -> int:
    """Rebuild the read model in ``target`` from ``source``'s event log, from seq 0; events applied."""
    applied, after = 0, 0
    while True:
        logged = await source.read_log(after, limit=batch, types=TYPES)
        async with target.transaction() as tx:  # one per page: a rebuild of a month's log takes seconds
            for item in logged:
                applied += await apply_in(tx, item.event, consortium, group=GROUP, tz=tz)
        if len(logged) < batch:
            return applied
        after = logged[-1].seq


class MonitorService:
    name = "monitor"

    def __init__(self, rt: Runtime, settings: MonitorSettings | None = None) -> None:
        self.rt = rt
        if settings is not None:
            rt.shared[SETTINGS_KEY] = settings
        self.settings = settings_of(rt)
        self.types = subscribed_types(rt.schemas.types)
        rt.bus.subscribe(GROUP, self.types, self.on_event)
        from .instruments import install_read_model_collectors
        install_read_model_collectors(rt)
        self._applied = metrics_of(rt).counter("yilian_monitor_events_total",
                                               "Events applied to the monitor's read model", ("type",))

    async def on_event(self, event: Event) -> None:
        async with self.rt.store.transaction() as tx:
            applied = await apply_in(tx, event, self.rt.consortium, tz=self.rt.local_time.tz)
        if applied:
            self._applied.inc(type=event.type)

    async def start(self) -> None:
        log.info("monitor consuming", extra={"group": GROUP, "types": self.types, "since": iso(self.settings.clock())})

    async def stop(self) -> None:
        pass


