"""Reading a task: claim race, leases, drafts, signing with a critical finding, addenda,
escalation, return for re-scan, illegal transitions, and the event + audit trail."""

from __future__ import annotations

import asyncio

import pytest

from services.core.auth import Principal
from services.workflow import queries
from services.workflow.commands import (Addendum, Claim, Escalate, Release, RenewLease, RequestReading,
                                        ReturnForRescan, SaveDraft, Sign)
from services.workflow.errors import Conflict, Forbidden, IllegalTransition, Invalid, NotFound
from services.workflow.service import execute

from ..support import wait_for
from .conftest import LEASE_SECONDS

UID = "1.2.826.0.1.3680043.8.498.500"


async def queued_ct(world, uid=UID, priority="urgent") -> dict:
    await world.add_study(uid, "chengguan-thc", ["CT"], announce=False, patient_name="王^小明")
    return await execute(world.rt, RequestReading(uid, "imaging", priority, "胸痛，排除主动脉夹层"),
                         actor=world.who("cg-clinic"))


async def test_ten_readers_race_to_claim_exactly_one_wins(world):
    doc = await queued_ct(world)
    readers = [world.who("dr-wang"), world.who("dr-li")] + [_extra_reader(i) for i in range(8)]
    results = await asyncio.gather(*(execute(world.rt, Claim(doc["id"]), actor=r) for r in readers),
                                   return_exceptions=True)
    wins = [r for r in results if isinstance(r, dict)]
    losses = [r for r in results if isinstance(r, Exception)]
    assert len(wins) == 1, results
    assert all(isinstance(e, Conflict) for e in losses) and len(losses) == 9
    stored = await queries.get_request(world.store, doc["id"])
    assert stored["state"] == "claimed" and stored["claimed_by"] == wins[0]["claimed_by"]
    claimed_events = [e for e in await world.events(subject=doc["id"]) if e.type == "reading.claimed"]
    assert len(claimed_events) == 1
    assert await world.store.count("audit", {"action": "reading.claim"}) == 1


def _extra_reader(i):
    """More readers of the county imaging centre (the example file has two)."""
    return Principal(f"dr-extra-{i}", "reader", "county-hospital", "county-imaging", "test")


async def test_lease_expires_and_the_task_returns_to_the_queue(world):
    doc = await queued_ct(world)
    claimed = await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang"))
    world.clock.advance(LEASE_SECONDS - 10)
    renewed = await execute(world.rt, RenewLease(doc["id"]), actor=world.who("dr-wang"))
    assert renewed["lease_expires_at"] > claimed["lease_expires_at"]
    world.clock.advance(LEASE_SECONDS - 10)
    assert await world.service.sweep() == (0, 0)  # renewed in time: still his
    world.clock.advance(11)
    # The background sweeper would do this every sweep_interval; drive one pass now.
    assert (await world.service.sweep())[0] == 1
    back = await queries.get_request(world.store, doc["id"])
    assert back["state"] == "queued" and back["claimed_by"] is None and back["lease_expires_at"] is None
    expired = [e for e in await world.events(subject=doc["id"]) if e.type == "reading.lease_expired"][0]
    assert expired.data["reader_id"] == "dr-wang" and expired.data["actor"] == "system:workflow"
    audit = await world.store.find("audit", {"action": "reading.lease_expire"})
    assert audit[0]["actor"] == "system:workflow" and audit[0]["traceparent"] == expired.traceparent
    # The late reader has lost it; another may claim.
    with pytest.raises(IllegalTransition, match="state 'queued'"):
        await execute(world.rt, SaveDraft(doc["id"], "f", "i"), actor=world.who("dr-wang"))
    assert (await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-li")))["claimed_by"] == "dr-li"


async def test_background_sweeper_expires_leases(world):
    world.service.settings = world.rt.shared["workflow.settings"] = \
        type(world.service.settings)(lease_seconds=1, sweep_interval=0.05, clock=world.clock)
    await world.service.stop()
    await world.service.start()
    doc = await queued_ct(world)
    await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang"))
    world.clock.advance(2)

    async def requeued():
        return (await queries.get_request(world.store, doc["id"]))["state"] == "queued"
    await wait_for(requeued, timeout=5, what="sweeper to requeue the expired lease")


async def test_only_the_holder_works_on_a_task(world):
    doc = await queued_ct(world)
    await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang"))
    for command in (SaveDraft(doc["id"], "f", "i"), Sign(doc["id"], "f", "i"), RenewLease(doc["id"]),
                    Release(doc["id"]), Escalate(doc["id"], "x"), ReturnForRescan(doc["id"], "image_quality", "")):
        with pytest.raises(Conflict, match="held by another reader"):
            await execute(world.rt, command, actor=world.who("dr-li"))
        with pytest.raises(NotFound):  # another centre: does not exist for him
            await execute(world.rt, command, actor=world.who("dr-chen"))
    with pytest.raises(Forbidden):
        await execute(world.rt, Sign(doc["id"], "f", "i"), actor=world.who("coord-county"))
    # Expired but not yet swept: the holder may no longer write.
    world.clock.advance(LEASE_SECONDS + 1)
    with pytest.raises(Conflict, match="lease .* expired"):
        await execute(world.rt, Sign(doc["id"], "f", "i"), actor=world.who("dr-wang"))
    # The coordinator can take it back for the queue.
    released = await execute(world.rt, Release(doc["id"]), actor=world.who("coord-county"))
    assert released["state"] == "queued"


async def test_draft_then_sign_with_a_critical_finding(world):
    doc = await queued_ct(world)
    wang = world.who("dr-wang")
    await execute(world.rt, Claim(doc["id"]), actor=wang)
    with pytest.raises(Invalid, match="needs a critical_category"):
        await execute(world.rt, Sign(doc["id"], "主动脉增宽", "考虑主动脉夹层", critical=True), actor=wang)
    with pytest.raises(Invalid, match="findings must not be empty"):
        await execute(world.rt, Sign(doc["id"]), actor=wang)  # no draft yet, nothing given
    draft = await execute(world.rt, SaveDraft(doc["id"], "主动脉增宽，可见内膜片", "考虑主动脉夹层（Stanford A型）",
                                              critical=True, critical_category="主动脉夹层"), actor=wang)
    assert draft["state"] == "draft" and draft["draft"]["critical"] is True
    signed = await execute(world.rt, Sign(doc["id"]), actor=wang)  # values from the draft
    assert signed["state"] == "signed" and signed["signed_by"] == "dr-wang"
    report = await queries.report(world.store, signed["report_id"])
    assert report["critical"] is True and report["critical_category"] == "主动脉夹层"
    assert report["reader_name"] == "王建国" and report["findings"] == "主动脉增宽，可见内膜片"
    assert report["patient_name"] == "王^小明" and report["organization"] == "chengguan-thc"
    event = [e for e in await world.events(subject=doc["id"]) if e.type == "report.signed"][0]
    for key in ("report_id", "request_id", "study_uid", "organization", "centre", "reader_id", "reader_name",
                "signed_at", "findings", "impression", "critical", "critical_category", "addendum_of", "kind",
                "patient_id", "patient_name"):
        assert key in event.data, key
    assert event.data["critical"] is True and event.data["addendum_of"] is None
    assert event.data["report_id"] == report["id"] and event.data["reader_name"] == "王建国"
    # Signed is final: no second signature, no draft over it.
    for command in (Sign(doc["id"], "x", "y"), SaveDraft(doc["id"], "x", "y"), Claim(doc["id"])):
        with pytest.raises(IllegalTransition, match="state 'signed'"):
            await execute(world.rt, command, actor=wang)


async def test_addendum_is_a_new_linked_report_delivered_like_the_original(world):
    doc = await queued_ct(world)
    wang = world.who("dr-wang")
    await execute(world.rt, Claim(doc["id"]), actor=wang)
    signed = await execute(world.rt, Sign(doc["id"], "右肺结节 8mm", "建议随访"), actor=wang)
    original = await queries.report(world.store, signed["report_id"])
    world.clock.advance(3600)
    addendum = await execute(world.rt, Addendum(original["id"], "更正：结节位于左肺上叶"), actor=world.who("dr-li"))
    assert addendum["addendum_of"] == original["id"] and addendum["findings"] == "更正：结节位于左肺上叶"
    after = await queries.report(world.store, original["id"])
    assert {k: after[k] for k in ("findings", "impression", "signed_at", "reader_id")} == \
        {k: original[k] for k in ("findings", "impression", "signed_at", "reader_id")}
    assert after["addenda"] == [addendum["id"]]
    events = [e for e in await world.events(subject=doc["id"]) if e.type == "report.signed"]
    assert [e.data["addendum_of"] for e in events] == [None, original["id"]]
    assert [r["id"] for r in await queries.reports_of_study(world.store, UID)] == [original["id"], addendum["id"]]
    with pytest.raises(NotFound):
        await execute(world.rt, Addendum(original["id"], "x"), actor=world.who("dr-chen"))
    with pytest.raises(Forbidden):
        await execute(world.rt, Addendum(original["id"], "x"), actor=world.who("cg-clinic"))


async def test_escalate_creates_a_linked_request_at_the_city_centre(world):
    doc = await queued_ct(world)
    await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang"))
    await execute(world.rt, SaveDraft(doc["id"], "纵隔增宽", "待定"), actor=world.who("dr-wang"))
    escalated = await execute(world.rt, Escalate(doc["id"], "疑难病例，请上级会诊"), actor=world.who("dr-wang"))
    assert escalated["state"] == "escalated"
    linked = await queries.get_request(world.store, escalated["escalated_to"])
    assert linked["state"] == "queued" and linked["centre"] == "city-imaging"
    assert linked["escalated_from"] == doc["id"] and linked["escalation_reason"] == "疑难病例，请上级会诊"
    assert linked["organization"] == "chengguan-thc" and linked["priority"] == "urgent"
    assert linked["escalated_draft"]["findings"] == "纵隔增宽"  # the upper centre sees what was drafted
    assert linked["draft"] is None  # but signs its own words
    event = [e for e in await world.events(subject=doc["id"]) if e.type == "reading.escalated"][0]
    assert event.data["to_centre"] == "city-imaging" and event.data["escalated_to"] == linked["id"]
    assert [e.type for e in await world.events(subject=linked["id"])] == ["reading.requested", "reading.queued"]
    # The city reader reads it; the city centre has no escalation of its own.
    await execute(world.rt, Claim(linked["id"]), actor=world.who("dr-chen"))
    with pytest.raises(Invalid, match="no escalation centre"):
        await execute(world.rt, Escalate(linked["id"], "again"), actor=world.who("dr-chen"))
    signed = await execute(world.rt, Sign(linked["id"], "纵隔增宽", "主动脉夹层可能"), actor=world.who("dr-chen"))
    report = await queries.report(world.store, signed["report_id"])
    assert report["escalated_from"] == doc["id"] and report["centre"] == "city-imaging"


async def test_return_for_rescan(world):
    doc = await queued_ct(world)
    await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang"))
    with pytest.raises(Invalid, match="reason_code must be one of image_quality, wrong_exam, incomplete"):
        await execute(world.rt, ReturnForRescan(doc["id"], "blurry", ""), actor=world.who("dr-wang"))
    returned = await execute(world.rt, ReturnForRescan(doc["id"], "image_quality", "运动伪影严重，请重扫"),
                             actor=world.who("dr-wang"))
    assert returned["state"] == "returned" and returned["return"]["reason_code"] == "image_quality"
    event = [e for e in await world.events(subject=doc["id"]) if e.type == "reading.returned"][0]
    assert event.data["comment"] == "运动伪影严重，请重扫" and event.data["organization"] == "chengguan-thc"
    with pytest.raises(IllegalTransition, match="state 'returned'"):
        await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-li"))


async def test_illegal_transitions_change_nothing(world):
    doc = await queued_ct(world)
    before = await queries.get_request(world.store, doc["id"])
    log_before = await world.store.last_seq()
    audit_before = await world.store.count("audit")
    for command in (Sign(doc["id"], "f", "i"), SaveDraft(doc["id"], "f", "i"), Release(doc["id"]),
                    RenewLease(doc["id"]), Escalate(doc["id"], "r"), ReturnForRescan(doc["id"], "wrong_exam", "")):
        with pytest.raises(IllegalTransition, match="in state 'queued'"):
            await execute(world.rt, command, actor=world.who("dr-wang"))
    assert await queries.get_request(world.store, doc["id"]) == before
    assert await world.store.last_seq() == log_before and await world.store.count("audit") == audit_before


async def test_every_transition_has_an_event_and_an_audit_record_in_order(world):
    doc = await queued_ct(world)
    wang, li = world.who("dr-wang"), world.who("dr-li")
    await execute(world.rt, Claim(doc["id"]), actor=wang, remote="192.0.2.7")
    await execute(world.rt, Release(doc["id"]), actor=wang)
    await execute(world.rt, Claim(doc["id"]), actor=li)
    world.clock.advance(LEASE_SECONDS + 1)
    await world.service.sweep()
    await execute(world.rt, Claim(doc["id"]), actor=wang)
    await execute(world.rt, SaveDraft(doc["id"], "两肺纹理增多", "支气管炎"), actor=wang)
    final = await execute(world.rt, Sign(doc["id"]), actor=wang)

    events = await world.events(subject=doc["id"])
    assert [e.type for e in events] == [
        "reading.requested", "reading.queued", "reading.claimed", "reading.released", "reading.claimed",
        "reading.lease_expired", "reading.claimed", "reading.draft_saved", "report.signed"]
    assert [h["action"] for h in final["history"]] == [
        "request", "route", "claim", "release", "claim", "expire_lease", "claim", "save_draft", "sign"]
    expected_audit = [{"reading.request", "reading.queue"}, {"reading.claim"}, {"reading.release"},
                      {"reading.claim"}, {"reading.lease_expire"}, {"reading.claim"}, {"reading.draft"},
                      {"report.sign"}]
    audit = await world.store.find("audit", {"organization": "chengguan-thc"})
    by_trace: dict[str, list[str]] = {}
    for record in audit:
        by_trace.setdefault(record["traceparent"], []).append(record["action"])
    # Each event's transaction wrote its audit record (same correlation), in the events' order.
    assert [set(by_trace[e.traceparent]) for e in _first_per_trace(events)] == expected_audit
    assert len(audit) == 9
    claim_audit = [a for a in audit if a["traceparent"] == events[2].traceparent]
    assert claim_audit[0]["actor"] == "dr-wang" and claim_audit[0]["remote"] == "192.0.2.7" and claim_audit[0]["resource"] == f"reading/{doc['id']}"
    for e in events:
        world.rt.schemas.validate(e)  # and every one is schema-valid


def _first_per_trace(events):
    seen, out = set(), []
    for e in events:
        if e.traceparent not in seen:
            seen.add(e.traceparent)
            out.append(e)
    return out
