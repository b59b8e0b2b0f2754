"""The monitor's figures, computed from read-model rows at the time of the query.  No I/O.

Definitions (also in docs/monitor.md):

* **queue** of a centre: its reading requests in ``queued`` (waiting) or ``claimed``/``draft``
  (in progress), by kind and priority.
* **oldest waiting**: the ``queued`` task queued longest ago.
* **at risk**: an open task whose deadline is not yet past but ``risk_fraction`` of its SLA
  has passed (``now >= deadline - (1 - risk_fraction) * SLA``); **past deadline**: ``now >= deadline``.
* **turnaround**: queued (the clock of the SLA starts when the study is readable) to signed;
  p50/p90 by the nearest-rank method over readings signed today (local day) and in the last 7 days.
* **today** and the trend's **hours** are the consortium's (``rt.local_time``): a day starts at
  local midnight, an hour at a local full hour (Asia/Kolkata's at half past a UTC hour).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, tzinfo
from typing import Any

from .readmodel import HELD, iso, parse_time

Doc = dict[str, Any]
DAY = 86400.0
WEEK = 7 * DAY


@dataclass(frozen=True, slots=True)
class Window:
    """``now`` and the start of the local day (consortium time zone), both epoch seconds."""

    now: float
    day_start: float
    risk_fraction: float = 0.8
    utc_offset: float = 0.0  # the zone's offset at ``now``, seconds east of UTC: where local hours start

    @classmethod
    def at(cls, now: float, tz: tzinfo, *, risk_fraction: float = 0.8) -> Window:
        """The window of ``now`` in zone ``tz``.  A midnight skipped by a daylight-saving change
        (fold 0) resolves to the instant of the change, where that day really starts."""
        local = datetime.fromtimestamp(now, tz)
        midnight = datetime.combine(local.date(), time(), tzinfo=tz)
        return cls(now, midnight.timestamp(), risk_fraction, local.utcoffset().total_seconds())

    @property
    def hour_start(self) -> float:
        """The start of the local hour ``now`` is in."""
        return math.floor((self.now + self.utc_offset) / 3600) * 3600 - self.utc_offset

    @property
    def week_start(self) -> float:
        return self.now - WEEK


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least ``p`` of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p * len(ordered)))
    return ordered[rank - 1]


def turnaround(rows: Iterable[Doc], since: float) -> dict[str, Any]:
    values = [r["turnaround_seconds"] for r in rows
              if r.get("turnaround_seconds") is not None and r.get("signed_at") and parse_time(r["signed_at"]) >= since]
    return {"count": len(values), "p50_seconds": percentile(values, 0.5), "p90_seconds": percentile(values, 0.9)}


def risk(row: Doc, window: Window) -> str | None:
    """``"past_deadline"``, ``"at_risk"`` or ``None`` for an open task."""
    if not row.get("deadline"):
        return None
    deadline = parse_time(row["deadline"])
    if window.now >= deadline:
        return "past_deadline"
    sla = row.get("sla_seconds") or 0
    if sla and window.now >= deadline - (1 - window.risk_fraction) * sla:
        return "at_risk"
    return None


def _task(row: Doc, window: Window) -> Doc:
    return {"request_id": row["id"], "study_uid": row["study_uid"], "organization": row["organization"],
            "kind": row["kind"], "priority": row["priority"], "state": row["state"], "queued_at": row.get("queued_at"),
            "deadline": row.get("deadline"), "claimed_by": row.get("claimed_by"), "claimed_at": row.get("claimed_at"),
            "seconds_to_deadline": round(parse_time(row["deadline"]) - window.now, 1) if row.get("deadline") else None}


def queue(open_rows: Sequence[Doc], kinds: Sequence[str], priorities: Sequence[str]) -> dict[str, Any]:
    cells = {(k, p): {"kind": k, "priority": p, "waiting": 0, "in_progress": 0} for k in kinds for p in priorities}
    for row in open_rows:
        cell = cells.setdefault((row["kind"], row["priority"]), {"kind": row["kind"], "priority": row["priority"],
                                                                   "waiting": 0, "in_progress": 0})
        cell["in_progress" if row["state"] in HELD else "waiting"] += 1
    waiting = sum(c["waiting"] for c in cells.values())
    in_progress = sum(c["in_progress"] for c in cells.values())
    return {"depth": waiting + in_progress, "waiting": waiting, "in_progress": in_progress, "by": list(cells.values())}


def oldest_waiting(open_rows: Sequence[Doc], window: Window) -> Doc | None:
    waiting = [r for r in open_rows if r["state"] == "queued" and r.get("queued_at")]
    if not waiting:
        return None
    row = min(waiting, key=lambda r: (r["queued_at"], r["id"]))
    return {**_task(row, window), "waiting_seconds": round(window.now - parse_time(row["queued_at"]), 1)}


def readers(roster: Sequence[Doc], open_rows: Sequence[Doc], signed_rows: Sequence[Doc], window: Window) -> list[Doc]:
    """On-duty readers of the roster, plus anyone holding or having signed work today."""
    out: dict[str, Doc] = {r["id"]: {"reader_id": r["id"], "name": r.get("name"), "on_duty": r.get("on_duty", True),
                                     "claimed": 0, "signed_today": 0} for r in roster}

    def entry(reader: str, name: str | None = None) -> Doc:
        return out.setdefault(reader, {"reader_id": reader, "name": name or reader, "on_duty": False,
                                       "claimed": 0, "signed_today": 0})
    for row in open_rows:
        if row["state"] in HELD and row.get("claimed_by"):
            entry(row["claimed_by"])["claimed"] += 1
    for row in signed_rows:
        if row.get("signed_by") and row.get("signed_at") and parse_time(row["signed_at"]) >= window.day_start:
            entry(row["signed_by"], row.get("signed_by_name"))["signed_today"] += 1
    return sorted(out.values(), key=lambda r: (not r["on_duty"], -r["claimed"], r["reader_id"]))


def trend(rows: Sequence[Doc], window: Window, *, hours: int = 24) -> list[Doc]:
    """Per local hour of the last ``hours``: tasks queued, signed, and the queue depth at the hour's end."""
    start = window.hour_start - (hours - 1) * 3600
    points = [{"hour": start + i * 3600, "queued": 0, "signed": 0, "depth": 0} for i in range(hours)]
    for row in rows:
        queued = parse_time(row["queued_at"]) if row.get("queued_at") else None
        closed = parse_time(row["closed_at"]) if row.get("closed_at") else None
        signed = parse_time(row["signed_at"]) if row.get("signed_at") else None
        for point in points:
            end = point["hour"] + 3600
            if queued is not None and point["hour"] <= queued < end:
                point["queued"] += 1
            if signed is not None and point["hour"] <= signed < end:
                point["signed"] += 1
            if queued is not None and queued < min(end, window.now) and (closed is None or closed >= min(end, window.now)):
                point["depth"] += 1
    return [{**p, "hour": iso(p["hour"])} for p in points]


TASKS_SHOWN = 200  # the coordinator's task list: the most urgent first; the worklist API has them all


def tasks(open_rows: Sequence[Doc], window: Window) -> list[Doc]:
    """The open tasks a coordinator acts on (assign, move, release), nearest deadline first."""
    ordered = sorted(open_rows, key=lambda r: (r.get("deadline") or "~", r["id"]))
    return [_task(r, window) for r in ordered[:TASKS_SHOWN]]


def centre(info: Doc, open_rows: Sequence[Doc], recent_rows: Sequence[Doc], results: Sequence[Doc],
           roster: Sequence[Doc], overflow: Doc, window: Window, *, priorities: Sequence[str],
           move_targets: Sequence[Doc] = ()) -> Doc:
    """Every figure of one centre.  ``recent_rows``: its requests signed or active in the last 7 days;
    ``move_targets``: the other centres a task can be moved to (id, name, kinds)."""
    signed = [r for r in recent_rows if r.get("signed_at")]
    flagged = [(risk(r, window), r) for r in open_rows]
    at_risk = sorted((r for k, r in flagged if k == "at_risk"), key=lambda r: r["deadline"])
    past = sorted((r for k, r in flagged if k == "past_deadline"), key=lambda r: r["deadline"])
    return {
        "centre": info["id"], "name": info.get("name"), "kinds": list(info.get("kinds") or []),
        "queue": queue(open_rows, info.get("kinds") or [], priorities),
        "oldest_waiting": oldest_waiting(open_rows, window),
        "at_risk_count": len(at_risk), "at_risk": [_task(r, window) for r in at_risk[:50]],
        "past_deadline_count": len(past), "past_deadline": [_task(r, window) for r in past[:50]],
        "turnaround": {"today": turnaround(signed, window.day_start), "7d": turnaround(signed, window.week_start)},
        "signed_today": sum(1 for r in signed if parse_time(r["signed_at"]) >= window.day_start),
        "readers": readers(roster, open_rows, signed, window),
        "tasks": tasks(open_rows, window), "tasks_count": len(open_rows),
        "move_targets": [dict(t) for t in move_targets],
        "overflow": overflow,
        "dead_letters": [_result(r) for r in results if r.get("dead_lettered")],
        "critical_unacknowledged": [_result(r) for r in results if r.get("critical_unacknowledged")],
        "trend": trend(list(open_rows) + [r for r in recent_rows if r["state"] not in ("queued", "claimed", "draft")],
                       window),
    }


def _result(row: Doc) -> Doc:
    return {k: row.get(k) for k in ("id", "result_id", "request_id", "organization", "centre", "critical", "signed_at",
                                    "delivered_at", "dead_letter_reason", "dead_lettered_at",
                                    "critical_unacknowledged_at", "failures")}
