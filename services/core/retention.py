"""Retention periods (电子病历应用管理规范（试行）第19条): how long a study or report must be kept.

A record belongs to a class (``outpatient``, ``inpatient``, or another the consortium file names);
it is kept for that class's years from its *last activity*, the latest time recorded on it and on
the records that hang off it (a study's reading requests, reports and results; a report's
addenda).  A record whose class is not known is kept as long as ``retention.default_class`` says
(inpatient by default: the longer period, so nothing goes early).  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .consortium import RetentionConfig


@dataclass(frozen=True, slots=True)
class Retention:
    record_class: str
    years: int
    last_activity: str  # ISO 8601 UTC
    retained_until: str

    def expired(self, now: datetime) -> bool:
        return now >= _instant(self.retained_until)

    def to_dict(self) -> dict[str, Any]:
        return {"record_class": self.record_class, "years": self.years, "last_activity": self.last_activity,
                "retained_until": self.retained_until}


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def last_activity(docs: Iterable[dict[str, Any]]) -> str | None:
    """The latest ``..._at`` time on any of ``docs`` (received, requested, signed, acknowledged ...)."""
    latest: datetime | None = None
    for doc in docs:
        for key, value in doc.items():
            if not key.endswith("_at") or not isinstance(value, str):
                continue
            try:
                moment = _instant(value)
            except ValueError:
                continue  # not a time (a field that merely ends in _at)
            if latest is None or moment > latest:
                latest = moment
    return _iso(latest) if latest else None


def add_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February into a common year: the day after
        return moment.replace(year=moment.year + years, month=3, day=1)


def longest_class(config: RetentionConfig, classes: Iterable[Any]) -> str | None:
    """Of the known record classes among ``classes``, the one kept longest (None if none is known):
    a study read for an inpatient and an outpatient request is kept as long as the longer."""
    known = [c for c in classes if isinstance(c, str) and c in config.years]
    return max(known, key=lambda c: config.years[c]) if known else None


def retention_of(config: RetentionConfig, record_class: str | None, docs: Iterable[dict[str, Any]],
                 *, now: datetime) -> Retention:
    """The retention of a record described by ``docs`` (itself first, then what hangs off it)."""
    cls = record_class if record_class in config.years else config.default_class
    years = config.years[cls]
    # A record with no time on it at all is as recent as now: kept a whole period from today.
    last = last_activity(docs) or _iso(now)
    return Retention(cls, years, last, _iso(add_years(_instant(last), years)))
