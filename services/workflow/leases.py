"""Leases and time: how long a claim lasts, and a clock tests can drive.

A claim is a lease of ``YILIAN_LEASE_SECONDS`` (default 900 s), renewed by the reader's
client while he works (every draft save renews too).  The service's sweeper returns
expired leases to the queue.  Times in documents are ISO 8601 UTC strings with
milliseconds, which sort as text, so the store compares them directly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.settings import env_float
from ..core.times import iso, parse_iso

__all__ = ["Clock", "WorkflowSettings", "iso", "parse_iso"]

Clock = Callable[[], float]  # seconds since the epoch


@dataclass(frozen=True)
class WorkflowSettings:
    lease_seconds: float = 900.0
    sweep_interval: float = 5.0  # how often expired leases and SLA risks are looked for
    sla_risk_fraction: float = 0.8  # a queued task is at risk once this much of its SLA has passed
    wait_seconds: float = 7 * 86400.0  # how long a request waits for its study from the clinic's organisation
    order_overdue_seconds: float = 86400.0  # an order with no study this long after its scheduled time is overdue
    clock: Clock = time.time
    # draws the random share of signed reports for peer review; tests seed their own
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_env(cls, **overrides) -> WorkflowSettings:
        values = dict(lease_seconds=env_float("YILIAN_LEASE_SECONDS", 900.0),
                      sweep_interval=env_float("YILIAN_WORKFLOW_SWEEP_SECONDS", 5.0),
                      sla_risk_fraction=env_float("YILIAN_SLA_RISK_FRACTION", 0.8),
                      wait_seconds=env_float("YILIAN_REQUEST_WAIT_SECONDS", 7 * 86400.0),
                      order_overdue_seconds=env_float("YILIAN_ORDER_OVERDUE_SECONDS", 86400.0))
        values.update(overrides)
        return cls(**values)

    def now(self) -> float:
        return self.clock()
