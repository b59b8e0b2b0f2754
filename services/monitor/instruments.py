"""What ``/metrics`` shows of the monitor's read model: queues and turnaround.  (HTTP requests and
DIMSE responses are counted with ``services/core/instruments.py``, which every service may import.)

Metric names (documented in docs/monitor.md):

* ``yilian_queue_depth{centre,kind,priority,state}`` — open tasks (``state``: queued, claimed, draft)
* ``yilian_queue_at_risk{centre}``, ``yilian_queue_past_deadline{centre}``, ``yilian_queue_oldest_waiting_seconds{centre}``
* ``yilian_turnaround_seconds{centre,kind,priority}`` — histogram, queued to signed
* ``yilian_results_dead_lettered{centre}``, ``yilian_critical_unacknowledged{centre}``
"""

from __future__ import annotations

from collections import Counter as Tally

from ..core.metrics import Family, Sample, histogram_samples, metrics_of
from ..core.runtime import Runtime
from . import figures
from .readmodel import TURNAROUND_BUCKETS


def install_read_model_collectors(rt: Runtime) -> None:
    """Register the read model's figures in the runtime's registry (where the monitor runs)."""

    async def collect() -> list[Family]:
        from .views import MonitorViews
        views = MonitorViews.of(rt)
        win = views.window()
        rows = await views.queue_rows()
        depth = Tally((r["centre"], r["kind"], r["priority"], r["state"]) for r in rows)
        risks = Tally((r["centre"], figures.risk(r, win)) for r in rows)
        oldest: dict[str, float] = {}
        for r in rows:
            if r["state"] == "queued" and r.get("queued_at"):
                waited = win.now - figures.parse_time(r["queued_at"])
                oldest[r["centre"]] = max(oldest.get(r["centre"], 0.0), waited)
        centres = list(rt.consortium.centres)
        problems = await views.open_problems()
        turnaround: list[Sample] = []
        for t in await views.turnaround_totals():
            turnaround += histogram_samples("yilian_turnaround_seconds", {"centre": t["centre"], "kind": t["kind"],
                                            "priority": t["priority"]}, TURNAROUND_BUCKETS, t["buckets"],
                                            t["sum"], t["count"])

        def per_centre(name: str, help: str, values: dict[str, float]) -> Family:
            return Family(name, "gauge", help, [Sample(name, {"centre": c}, values.get(c, 0)) for c in centres])
        return [
            Family("yilian_queue_depth", "gauge", "Open reading tasks by centre, kind, priority and state",
                   [Sample("yilian_queue_depth", {"centre": c, "kind": k, "priority": p, "state": s}, n)
                    for (c, k, p, s), n in sorted(depth.items())]),
            per_centre("yilian_queue_at_risk", "Open tasks at risk of missing their deadline",
                       {c: n for (c, k), n in risks.items() if k == "at_risk"}),
            per_centre("yilian_queue_past_deadline", "Open tasks past their deadline",
                       {c: n for (c, k), n in risks.items() if k == "past_deadline"}),
            per_centre("yilian_queue_oldest_waiting_seconds", "How long the oldest queued task has waited", oldest),
            Family("yilian_turnaround_seconds", "histogram", "Reading turnaround, queued to signed", turnaround),
            per_centre("yilian_results_dead_lettered", "Signed results whose delivery was dead-lettered",
                       dict(Tally(r["centre"] for r in problems if r.get("dead_lettered")))),
            per_centre("yilian_critical_unacknowledged", "Critical findings (危急值) not acknowledged in time",
                       dict(Tally(r["centre"] for r in problems if r.get("critical_unacknowledged")))),
        ]
    metrics_of(rt).collector("monitor.read_model", collect)
