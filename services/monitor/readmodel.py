"""The monitor's projection: what each event changes in the read model.  No I/O.

The service asks :func:`keys` which documents an event touches, loads them, and calls
:func:`apply`, which returns the documents to write.  The read model is rebuilt by feeding
the event log from the start through the same two functions, so it depends on nothing
but events (and the SLA table, to recover when a task was queued from its deadline).

Collections (declared in ``services/core/store/schema.py``):

* ``monitor_requests`` — one row per reading request: where it is queued, its state, its
  times (queued, deadline, claimed, signed) and its overflow;
* ``monitor_studies`` — one row per study a site sent (``study.received``);
* ``monitor_results`` — one row per signed report: delivered, acknowledged, dead-lettered,
  critical finding (危急值) left unacknowledged;
* ``monitor_totals`` — turnaround histograms per centre, kind and priority (Prometheus).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..core.events import Event

Doc = dict[str, Any]
Key = tuple[str, str]
SlaOf = Callable[[str, str], int | None]

REQUESTS, STUDIES, RESULTS, TOTALS = "monitor_requests", "monitor_studies", "monitor_results", "monitor_totals"

OPEN = ("queued", "claimed", "draft", "submitted")  # on a centre's queue (waiting, being read, or reviewed)
HELD = ("claimed", "draft")
FINAL = ("signed", "escalated", "returned", "cancelled")

# Turnaround histogram bounds (seconds): 5 min ... 2 days, around the SLAs (15 min ... 24 h).
TURNAROUND_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800)

READING_TYPES = ("reading.requested", "reading.queued", "reading.claimed", "reading.draft_saved",
                 "reading.released", "reading.lease_expired", "reading.moved", "reading.escalated",
                 "reading.returned", "reading.cancelled", "reading.sla_at_risk", "reading.assigned",
                 # two-level sign-off: a junior's report waits for review; its SLA runs on until report.signed
                 "report.submitted", "report.reviewed", "report.sent_back")
RESULT_TYPES = ("result.delivered", "result.delivery_failed", "result.acknowledged", "critical.unacknowledged")
TYPES = (*READING_TYPES, "report.signed", "study.received", "instance.stored", *RESULT_TYPES)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _report_id(event: Event) -> str:
    """Delivery events name the result and, for a reading, its report (the monitor's key)."""
    return event.data.get("report_id") or event.data.get("result_id") or event.subject


def keys(event: Event) -> list[Key]:
    """The documents ``event`` changes (loaded by the caller and passed to :func:`apply`)."""
    data = event.data
    if event.type in READING_TYPES:
        return [(REQUESTS, data["request_id"])]
    if event.type == "report.signed":
        return [(REQUESTS, data["request_id"]), (RESULTS, data["report_id"]),
                (TOTALS, totals_id(data["centre"], data["kind"], data.get("priority") or "routine"))]
    if event.type in ("study.received", "instance.stored"):
        return [(STUDIES, data["study_uid"])]
    if event.type in RESULT_TYPES and data.get("source") != "returned":  # a re-scan notice is no result
        return [(RESULTS, _report_id(event))]
    return []


def totals_id(centre: str, kind: str, priority: str) -> str:
    return f"turnaround|{centre}|{kind}|{priority}"


def _new_request(data: Doc, at: str) -> Doc:
    return {"id": data["request_id"], "study_uid": data["study_uid"], "organization": data["organization"],
            "kind": data["kind"], "priority": data["priority"], "state": data["state"], "centre": data.get("centre"),
            "source": None, "requested_at": at, "queued_at": None, "deadline": None, "sla_seconds": None,
            "routed_centre": None, "overflow_from": None, "overflow_to": None, "overflow_at": None,
            "moves": 0, "claimed_by": None, "claimed_at": None, "signed_at": None, "signed_by": None,
            "signed_by_name": None, "report_id": None, "critical": False, "turnaround_seconds": None,
            "closed_at": None, "sla_flagged": False, "escalated_from": None, "escalated_to": None}


def apply(event: Event, docs: dict[Key, Doc | None], sla_of: SlaOf) -> list[tuple[str, Doc]]:
    """The documents to write after ``event``, given the current ones (``None`` if absent)."""
    data, t = event.data, event.type
    if t in READING_TYPES:
        return [(REQUESTS, _reading(event, docs.get((REQUESTS, data["request_id"])), sla_of))]
    if t == "report.signed":
        return _signed(event, docs)
    if t in ("study.received", "instance.stored"):
        return [(STUDIES, _study(event, docs.get((STUDIES, data["study_uid"]))))]
    if t in RESULT_TYPES and data.get("source") != "returned":
        return [(RESULTS, _result(event, docs.get((RESULTS, _report_id(event)))))]
    return []


def _reading(event: Event, row: Doc | None, sla_of: SlaOf) -> Doc:
    data, t = event.data, event.type
    row = dict(row) if row else _new_request(data, event.time)
    # Every reading event carries the request's state, centre, kind and priority after the change.
    row.update(state=data["state"], centre=data.get("centre"), kind=data["kind"], priority=data["priority"],
               organization=data["organization"])
    if t == "reading.requested":
        row.update(source=data.get("source"), requested_at=row.get("requested_at") or event.time,
                   escalated_from=data.get("escalated_from"))
    elif t == "reading.queued":
        sla = sla_of(data["kind"], data["priority"])
        deadline = data["deadline"]
        # The workflow's clock queued it at deadline - SLA (the event time is the wall clock).
        queued_at = iso(parse_time(deadline) - sla) if sla else event.time
        overflow = data.get("overflow") or {}
        row.update(deadline=deadline, sla_seconds=sla, queued_at=queued_at, routed_centre=data.get("routed_centre"),
                   overflow_from=overflow.get("from"), overflow_to=overflow.get("to"),
                   overflow_at=queued_at if overflow else None, modality=data.get("modality"))
    elif t in ("reading.claimed", "reading.assigned", "report.sent_back"):
        row.update(claimed_by=data["reader_id"], claimed_at=event.time)
    elif t in ("reading.released", "reading.lease_expired"):
        row.update(claimed_by=None, claimed_at=None)
    elif t == "reading.moved":
        row.update(moves=(row.get("moves") or 0) + 1)
    elif t == "reading.escalated":
        row.update(escalated_to=data.get("escalated_to"), closed_at=event.time)
    elif t in ("reading.returned", "reading.cancelled"):
        row.update(closed_at=event.time)
    elif t == "reading.sla_at_risk":
        row.update(sla_flagged=True)
    if data["state"] not in HELD:
        row.update(claimed_by=None)
    return row


def _signed(event: Event, docs: dict[Key, Doc | None]) -> list[tuple[str, Doc]]:
    data = event.data
    out: list[tuple[str, Doc]] = []
    result = docs.get((RESULTS, data["report_id"])) or {}
    out.append((RESULTS, {
        "delivered_at": None, "acknowledged_at": None, "dead_lettered": False, "dead_letter_reason": None,
        "failures": 0, "critical_unacknowledged": False, "channels": [], "dead_channels": [], **result,
        "id": data["report_id"], "request_id": data["request_id"], "organization": data["organization"],
        "centre": data["centre"], "kind": data["kind"], "critical": bool(data.get("critical")),
        "critical_category": data.get("critical_category"), "signed_at": data["signed_at"],
        "addendum_of": data.get("addendum_of")}))
    if data.get("addendum_of"):
        return out  # a correction: the reading was already signed and timed
    key = (REQUESTS, data["request_id"])
    row = dict(docs.get(key) or _new_request({**data, "state": "signed"}, event.time))
    if row.get("signed_at"):
        return out
    turnaround = None
    if row.get("queued_at"):
        turnaround = max(0.0, round(parse_time(data["signed_at"]) - parse_time(row["queued_at"]), 3))
    row.update(state="signed", centre=data["centre"], signed_at=data["signed_at"], signed_by=data["reader_id"],
               signed_by_name=data.get("reader_name"), claimed_by=data["reader_id"], report_id=data["report_id"],
               critical=bool(data.get("critical")), turnaround_seconds=turnaround, closed_at=data["signed_at"])
    out.append((REQUESTS, row))
    if turnaround is not None:
        priority = data.get("priority") or row["priority"]
        tid = totals_id(data["centre"], data["kind"], priority)
        totals = dict(docs.get((TOTALS, tid)) or {"id": tid, "centre": data["centre"], "kind": data["kind"],
                                                  "priority": priority, "buckets": [0] * len(TURNAROUND_BUCKETS),
                                                  "sum": 0.0, "count": 0})
        totals["buckets"] = [c + (1 if turnaround <= b else 0) for c, b in zip(totals["buckets"], TURNAROUND_BUCKETS)]
        totals.update(sum=round(totals["sum"] + turnaround, 3), count=totals["count"] + 1)
        out.append((TOTALS, totals))
    return out


def _study(event: Event, row: Doc | None) -> Doc:
    data = event.data
    row = dict(row or {"id": data["study_uid"], "organization": data["organization"], "received": False,
                       "first_received_at": None, "revision": 0, "instances_stored": 0,
                       "first_instance_at": None})
    if event.type == "study.received":
        row.update(received=True, organization=data["organization"],
                   first_received_at=row.get("first_received_at") or event.time,
                   revision=max(row.get("revision") or 0, data.get("revision") or 0),
                   instance_count=data.get("instance_count"), modalities=data.get("modalities") or [])
    else:
        row.update(instances_stored=(row.get("instances_stored") or 0) + 1,
                   first_instance_at=row.get("first_instance_at") or event.time)
    return row


def _result(event: Event, row: Doc | None) -> Doc:
    data = event.data
    row = dict(row or {"id": _report_id(event), "request_id": data.get("request_id"),
                       "organization": data.get("organization"), "centre": data.get("centre"),
                       "critical": bool(data.get("critical")), "signed_at": None, "delivered_at": None,
                       "acknowledged_at": None, "dead_lettered": False, "dead_letter_reason": None, "failures": 0,
                       "critical_unacknowledged": False, "channels": [], "dead_channels": [],
                       "result_id": data.get("result_id")})
    for field in ("request_id", "organization", "centre", "result_id"):  # result_id: what re-drive names
        if not row.get(field) and data.get(field):
            row[field] = data[field]
    channel = data.get("channel")
    dead = [c for c in row.get("dead_channels") or [] if c != channel]
    if event.type == "result.delivered":
        channels = list(row.get("channels") or [])
        if channel and channel not in channels:
            channels.append(channel)
        # A re-driven channel that now delivered is no longer dead-lettered.
        row.update(delivered_at=row.get("delivered_at") or data.get("delivered_at") or event.time,
                   channels=channels, dead_channels=dead, dead_lettered=bool(dead))
    elif event.type == "result.delivery_failed":  # emitted once delivery gives up on a channel
        row.update(failures=(row.get("failures") or 0) + 1, dead_channels=[*dead, channel],
                   dead_lettered=True, dead_letter_reason=data.get("reason"), dead_lettered_at=event.time)
    elif event.type == "result.acknowledged":
        row.update(acknowledged_at=row.get("acknowledged_at") or data.get("acknowledged_at") or event.time,
                   critical_unacknowledged=False)
    elif event.type == "critical.unacknowledged":
        if not row.get("acknowledged_at"):
            row.update(critical=True, critical_unacknowledged=True, escalations=data.get("escalation"),
                       critical_unacknowledged_at=row.get("critical_unacknowledged_at") or event.time)
    return row
