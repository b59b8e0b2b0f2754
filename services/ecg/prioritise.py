"""Which automatic measurements are far enough outside normal to raise a request's priority.

I/O free.  Thresholds come from the environment (docs/configuration.md, "ECG triage") with defaults that
do not depend on the consortium.  A breach raises a priority one step (routine -> urgent,
urgent -> stat); stat stays stat; nothing here ever lowers one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..core.settings import env_float

RAISE = {"routine": "urgent", "urgent": "stat"}


@dataclass(frozen=True)
class Thresholds:
    heart_rate_low: float = 40.0  # bpm: below is marked bradycardia
    heart_rate_high: float = 150.0  # bpm: above is marked tachycardia
    qtc_high: float = 500.0  # ms, Bazett: risk of torsades de pointes
    # ms: markedly broad QRS.  Not 120: the lead-II estimate runs ~40 ms long (docs/ecg.md), and
    # a normal ECG must not jump the queue.
    qrs_high: float = 160.0
    lead: str = "II"

    @classmethod
    def from_env(cls) -> Thresholds:
        return cls(heart_rate_low=env_float("YILIAN_ECG_HR_LOW", 40.0),
                   heart_rate_high=env_float("YILIAN_ECG_HR_HIGH", 150.0),
                   qtc_high=env_float("YILIAN_ECG_QTC_HIGH_MS", 500.0),
                   qrs_high=env_float("YILIAN_ECG_QRS_HIGH_MS", 160.0),
                   lead=os.environ.get("YILIAN_ECG_LEAD") or "II")


def breaches(result: dict[str, Any], thresholds: Thresholds) -> list[dict[str, Any]]:
    """The measurements of ``measure.measure``'s result outside the thresholds, each with a reason."""
    values = result.get("measurements", {})

    def value(name: str) -> float | None:
        item = values.get(name) or {}
        return item.get("value") if item.get("available") else None

    out = []
    hr, qtc, qrs = value("heart_rate"), value("qtc_bazett"), value("qrs")
    if hr is not None and hr < thresholds.heart_rate_low:
        out.append({"measurement": "heart_rate", "value": hr, "unit": "bpm", "limit": thresholds.heart_rate_low,
                    "reason": f"heart rate {hr:.0f} bpm < {thresholds.heart_rate_low:g} (bradycardia)"})
    if hr is not None and hr > thresholds.heart_rate_high:
        out.append({"measurement": "heart_rate", "value": hr, "unit": "bpm", "limit": thresholds.heart_rate_high,
                    "reason": f"heart rate {hr:.0f} bpm > {thresholds.heart_rate_high:g} (tachycardia)"})
    if qtc is not None and qtc > thresholds.qtc_high:
        out.append({"measurement": "qtc_bazett", "value": qtc, "unit": "ms", "limit": thresholds.qtc_high,
                    "reason": f"QTc (Bazett) {qtc:.0f} ms > {thresholds.qtc_high:g} ms"})
    if qrs is not None and qrs > thresholds.qrs_high:
        out.append({"measurement": "qrs", "value": qrs, "unit": "ms", "limit": thresholds.qrs_high,
                    "reason": f"QRS {qrs:.0f} ms > {thresholds.qrs_high:g} ms (broad QRS)"})
    return out


def raised(priority: str) -> str | None:
    """The priority one step up, or None when there is none (stat)."""
    return RAISE.get(priority)
