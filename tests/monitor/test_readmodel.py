"""The projection and the figures without I/O: what each event changes, and the definitions."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from services.core.events import Event
from services.core.metrics import Registry, render
from services.monitor import readmodel as rm
from services.monitor.figures import Window, percentile, risk
from services.monitor.readmodel import REQUESTS, RESULTS, STUDIES, TOTALS

SLA = {("imaging", "stat"): 1800, ("imaging", "routine"): 86400}


def sla_of(kind: str, priority: str) -> int:
    return SLA[(kind, priority)]


class Model:
    """The read model as a dict of collections, fed through keys() and apply() like the service."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict] = {}

    def feed(self, event: Event) -> None:
        current = {k: self.docs.get(k) for k in rm.keys(event)}
        for collection, doc in rm.apply(event, current, sla_of):
            self.docs[(collection, doc["id"])] = doc

    def get(self, collection: str, id: str) -> dict:
        return self.docs[(collection, id)]


def reading(type_: str, state: str, centre: str | None = "county-imaging", rid: str = "rr-1", **extra) -> Event:
    return Event(type_, subject=rid, data={"request_id": rid, "study_uid": "1.2.3", "organization": "lizhuang-vc",
                                           "kind": "imaging", "priority": "stat", "state": state, "centre": centre,
                                           "actor": "x", **extra})


def signed(rid: str = "rr-1", report: str = "rp-1", at: str = "2026-11-18T10:20:00.000Z", **extra) -> Event:
    return Event("report.signed", subject=rid, data={
        "request_id": rid, "report_id": report, "study_uid": "1.2.3", "organization": "lizhuang-vc",
        "centre": extra.pop("centre", "city-imaging"), "kind": "imaging", "priority": "stat", "reader_id": "dr-chen",
        "reader_name": "陈志强", "signed_at": at, "findings": "f", "impression": "i", "critical": True,
        "critical_category": "气胸", "addendum_of": None, "patient_id": None, "patient_name": None, **extra})


def test_a_reading_from_request_to_signature():
    m = Model()
    m.feed(reading("reading.requested", "requested", centre=None, source="clinic", waiting=False))
    assert m.get(REQUESTS, "rr-1")["state"] == "requested" and m.get(REQUESTS, "rr-1")["centre"] is None
    m.feed(reading("reading.queued", "queued", centre="city-imaging", deadline="2026-11-18T10:30:00.000Z",
                   routed_centre="county-imaging", overflow={"from": "county-imaging", "to": "city-imaging",
                                                             "reason": "late"}))
    row = m.get(REQUESTS, "rr-1")
    # queued by the workflow's clock: the deadline minus the STAT SLA
    assert row["queued_at"] == "2026-11-18T10:00:00.000Z" and row["sla_seconds"] == 1800
    assert (row["overflow_from"], row["overflow_to"], row["centre"]) == ("county-imaging", "city-imaging", "city-imaging")
    m.feed(reading("reading.claimed", "claimed", centre="city-imaging", reader_id="dr-chen", lease_expires_at="x"))
    assert m.get(REQUESTS, "rr-1")["claimed_by"] == "dr-chen"
    m.feed(reading("reading.released", "queued", centre="city-imaging", reader_id="dr-chen"))
    assert m.get(REQUESTS, "rr-1")["claimed_by"] is None and m.get(REQUESTS, "rr-1")["state"] == "queued"
    m.feed(reading("reading.claimed", "claimed", centre="city-imaging", reader_id="dr-chen", lease_expires_at="x"))
    m.feed(signed())
    row = m.get(REQUESTS, "rr-1")
    assert (row["state"], row["turnaround_seconds"], row["signed_by"]) == ("signed", 1200.0, "dr-chen")
    totals = m.get(TOTALS, "turnaround|city-imaging|imaging|stat")
    assert totals["count"] == 1 and totals["sum"] == 1200.0
    assert totals["buckets"] == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]  # cumulative: <= 1800 s and above
    result = m.get(RESULTS, "rp-1")
    assert result["critical"] and result["delivered_at"] is None and not result["dead_lettered"]
    # an addendum is another result, not another reading: turnaround and totals stay
    m.feed(signed(report="rp-2", at="2026-11-18T12:00:00.000Z", addendum_of="rp-1"))
    assert m.get(REQUESTS, "rr-1")["signed_at"] == "2026-11-18T10:20:00.000Z"
    assert m.get(TOTALS, "turnaround|city-imaging|imaging|stat")["count"] == 1
    assert m.get(RESULTS, "rp-2")["addendum_of"] == "rp-1"


def test_an_assignment_moves_the_holder():
    m = Model()
    m.feed(reading("reading.claimed", "claimed", reader_id="dr-wang", lease_expires_at="x"))
    m.feed(reading("reading.assigned", "claimed", reader_id="dr-li", previous_holder="dr-wang",
                   assigned_by="coord-county", reason="load", lease_expires_at="x"))
    row = m.get(REQUESTS, "rr-1")
    assert (row["state"], row["claimed_by"]) == ("claimed", "dr-li")

def test_moves_escalations_returns_and_cancellations():
    m = Model()
    m.feed(reading("reading.queued", "queued", deadline="2026-11-18T10:30:00.000Z", routed_centre="county-imaging",
                   overflow=None))
    m.feed(reading("reading.moved", "queued", centre="city-imaging", from_centre="county-imaging",
                   to_centre="city-imaging", reason="load", manual=True))
    row = m.get(REQUESTS, "rr-1")
    assert (row["centre"], row["moves"], row["overflow_to"]) == ("city-imaging", 1, None)
    m.feed(reading("reading.claimed", "claimed", centre="city-imaging", reader_id="dr-chen", lease_expires_at="x"))
    m.feed(reading("reading.escalated", "escalated", centre="city-imaging", to_centre="x", escalated_to="rr-2",
                   reason="second opinion"))
    row = m.get(REQUESTS, "rr-1")
    assert row["state"] == "escalated" and row["closed_at"] and row["claimed_by"] is None
    for type_, state in (("reading.returned", "returned"), ("reading.cancelled", "cancelled")):
        rid = f"rr-{state}"
        m.feed(reading("reading.queued", "queued", rid=rid, deadline="2026-11-18T10:30:00.000Z",
                       routed_centre="county-imaging", overflow=None))
        m.feed(reading(type_, state, rid=rid))
        assert m.get(REQUESTS, rid)["state"] == state and m.get(REQUESTS, rid)["closed_at"]


def delivery(type_: str, **data) -> Event:
    base = {"result_id": "res-1", "report_id": "rp-1", "organization": "lizhuang-vc", "centre": "city-imaging",
            "critical": True}
    return Event(type_, subject="res-1", data={**base, **data})


def test_deliveries_dead_letters_and_critical_findings():
    m = Model()
    # delivery events may overtake report.signed (other topic): the rows merge
    m.feed(delivery("result.delivery_failed", delivery_id="d1", channel="webhook", attempts=8, reason="503"))
    m.feed(signed())
    row = m.get(RESULTS, "rp-1")
    assert row["dead_lettered"] and row["dead_letter_reason"] == "503" and row["request_id"] == "rr-1"
    m.feed(delivery("result.delivered", delivery_id="d2", channel="inbox", attempts=1,
                    delivered_at="2026-11-18T10:21:00.000Z"))
    row = m.get(RESULTS, "rp-1")
    assert row["delivered_at"] == "2026-11-18T10:21:00.000Z" and row["dead_lettered"]  # the webhook is still dead
    m.feed(delivery("result.delivered", delivery_id="d1", channel="webhook", attempts=9,
                    delivered_at="2026-11-18T11:00:00.000Z"))  # re-driven
    assert not m.get(RESULTS, "rp-1")["dead_lettered"]
    m.feed(delivery("critical.unacknowledged", escalation=1, contact=None, due_at="x", overdue_seconds=60.0))
    assert m.get(RESULTS, "rp-1")["critical_unacknowledged"]
    m.feed(delivery("result.acknowledged", acknowledged_by="lz-clinic", mode="person",
                    acknowledged_at="2026-11-18T11:30:00.000Z", late=True))
    row = m.get(RESULTS, "rp-1")
    assert not row["critical_unacknowledged"] and row["acknowledged_at"] == "2026-11-18T11:30:00.000Z"
    # a consultation's result has no report: keyed by its result id
    m.feed(Event("result.delivered", subject="res-c", data={"result_id": "res-c", "report_id": None,
               "consultation_id": "c1", "organization": "dongba-thc", "critical": False, "delivery_id": "d",
               "channel": "inbox", "attempts": 1, "delivered_at": "2026-11-18T11:00:00.000Z"}))
    assert m.get(RESULTS, "res-c")["organization"] == "dongba-thc"


def test_a_study_announced_again_is_one_study():
    m = Model()
    for revision in (1, 2):
        m.feed(Event("study.received", subject="1.2.3", data={"study_uid": "1.2.3", "organization": "dongba-thc",
                                                                "series_count": 1, "instance_count": revision,
                                                                "modalities": ["DX"], "revision": revision}))
    row = m.get(STUDIES, "1.2.3")
    assert row["received"] and row["revision"] == 2 and row["instance_count"] == 2
    assert [k for k in m.docs if k[0] == STUDIES] == [(STUDIES, "1.2.3")]


def test_percentile_is_nearest_rank_and_risk_follows_the_sla():
    assert percentile([], 0.5) is None
    assert percentile([30, 10, 20], 0.5) == 20 and percentile([10, 20, 30, 40], 0.5) == 20
    assert percentile([10, 20, 30, 40], 0.9) == 40 and percentile([5], 0.9) == 5
    row = {"deadline": "2026-11-18T10:30:00.000Z", "sla_seconds": 1800}
    deadline = 1_794_997_800.0  # 2026-11-18T10:30:00Z
    assert risk(row, Window(deadline - 361, 0)) is None  # 80 % of 30 min is 24 min: 6 min before
    assert risk(row, Window(deadline - 360, 0)) == "at_risk"
    assert risk(row, Window(deadline, 0)) == "past_deadline"
    assert risk(row, Window(deadline - 1000, 0, risk_fraction=0.25)) == "at_risk"
    # "today" starts at local midnight: 00:30 Beijing on the 19th is 16:30 UTC on the 18th
    now = 1_795_019_400.0  # 2026-11-18T16:30:00Z
    assert Window.at(now, ZoneInfo("Asia/Shanghai")).day_start == 1_795_017_600.0  # 2026-11-18T16:00:00Z
    assert Window.at(now, ZoneInfo("UTC")).day_start == 1_794_960_000.0


async def test_the_registry_speaks_the_prometheus_text_format():
    registry = Registry()
    c = registry.counter("yilian_x_total", "X\nthings", ("who",))
    c.inc(who='a"b\\c')
    c.inc(2, who='a"b\\c')
    h = registry.histogram("yilian_y_seconds", "Y", buckets=(0.1, 1))
    for v in (0.05, 0.5, 5):
        h.observe(v)
    g = registry.gauge("yilian_z", "Z")
    g.set(1.5)
    text = await registry.exposition()
    assert text == "\n".join([
        "# HELP yilian_x_total X things", "# TYPE yilian_x_total counter", 'yilian_x_total{who="a\\"b\\\\c"} 3',
        "# HELP yilian_y_seconds Y", "# TYPE yilian_y_seconds histogram",
        'yilian_y_seconds_bucket{le="0.1"} 1', 'yilian_y_seconds_bucket{le="1"} 2', 'yilian_y_seconds_bucket{le="+Inf"} 3',
        "yilian_y_seconds_sum 5.55", "yilian_y_seconds_count 3",
        "# HELP yilian_z Z", "# TYPE yilian_z gauge", "yilian_z 1.5"]) + "\n"
    with pytest.raises(ValueError):
        c.inc(-1, who="a")
    with pytest.raises(ValueError):
        c.inc(who="a", extra="b")
    with pytest.raises(ValueError):
        registry.gauge("yilian_x_total", "again as a gauge", ("who",))
    assert registry.counter("yilian_x_total", "X", ("who",)) is c
    assert render([]) == "\n"


def test_a_submitted_report_keeps_the_reading_open_until_its_release():
    """Two-level sign-off: the SLA runs until report.signed (the release), not the submission."""
    m = Model()
    m.feed(reading("reading.queued", "queued", deadline="2026-11-18T10:30:00.000Z", routed_centre="county-imaging"))
    m.feed(reading("reading.claimed", "claimed", reader_id="dr-zhou", lease_expires_at="x"))
    m.feed(reading("report.submitted", "submitted", reader_id="dr-zhou", reader_name="周晓明", critical=False,
                   version=1))
    row = m.get(REQUESTS, "rr-1")
    assert row["state"] == "submitted" and row["state"] in rm.OPEN and row["claimed_by"] is None
    assert not row.get("signed_at") and (TOTALS, "turnaround|county-imaging|imaging|stat") not in m.docs
    m.feed(reading("report.sent_back", "draft", reader_id="dr-zhou", reviewer_id="dr-li", comment="c",
                   lease_expires_at="x"))
    assert m.get(REQUESTS, "rr-1")["claimed_by"] == "dr-zhou"
    m.feed(reading("report.submitted", "submitted", reader_id="dr-zhou", critical=False, version=3))
    m.feed(signed(centre="county-imaging", at="2026-11-18T10:25:00.000Z", reader_id="dr-zhou", reviewer_id="dr-li"))
    row = m.get(REQUESTS, "rr-1")
    assert (row["state"], row["turnaround_seconds"]) == ("signed", 1500.0)
