"""Reading requests come into being: site rules on study.received, explicit requests that wait,
cancellation, and who may ask."""

from __future__ import annotations

import dataclasses

import pytest

from services.workflow import queries
from services.workflow.leases import iso
from services.workflow.commands import CancelReading, Claim, RequestReading
from services.workflow.errors import Forbidden, IllegalTransition, Invalid, NotFound
from services.workflow.service import execute, on_study_received, site_rule_request_id

from ..support import wait_for
from .conftest import T0

ECG_UID = "1.2.826.0.1.3680043.8.498.101"
DX_UID = "1.2.826.0.1.3680043.8.498.102"


async def test_site_rule_creates_one_request_even_when_redelivered(world):
    event = await world.add_study(ECG_UID, "zhangzhuang-vc", ["ECG"])
    await wait_for(lambda: world.handled(event), what="study.received handled")
    rid = site_rule_request_id(ECG_UID, "ecg")
    doc = await queries.get_request(world.store, rid)
    assert doc["state"] == "queued" and doc["centre"] == "county-ecg" and doc["source"] == "site_rule"
    assert doc["priority"] == "routine" and doc["modality"] == "ECG" and doc["patient_name"] == "张^三"

    # The same event delivered again, and a later revision of the study: still one request.
    # (the log keeps an event id once, so redelivery is the handler running again on it, as after a crash
    # before the offset commit)
    await on_study_received(world.rt, event)
    again = await world.add_study(ECG_UID, "zhangzhuang-vc", ["ECG"], revision=2)
    await wait_for(lambda: world.handled(again), what="revision 2 handled")
    await wait_for(world.drained, what="workflow consumer drained")
    assert len(await queries.requests_of(world.store, study_uid=ECG_UID)) == 1
    types = [e.type for e in await world.events(subject=rid)]
    assert types == ["reading.requested", "reading.queued"]


async def test_site_rule_ignores_other_modalities_and_sites(world):
    ct = await world.add_study("1.2.3.4.1", "hongmiao-thc", ["CT"])  # rule is for DX/CR only
    other = await world.add_study("1.2.3.4.2", "chengguan-thc", ["ECG"])  # no rule for this clinic
    dx = await world.add_study(DX_UID, "hongmiao-thc", ["DX"])
    for event in (ct, other, dx):
        await wait_for(lambda e=event: world.handled(e), what="handled")
    docs = await queries.requests_of(world.store)
    assert [(d["study_uid"], d["centre"]) for d in docs] == [(DX_UID, "county-imaging")]


async def test_explicit_request_waits_for_the_study(world):
    clinic = world.who("cg-clinic")
    uid = "1.2.826.0.1.3680043.8.498.103"
    doc = await execute(world.rt, RequestReading(uid, "imaging", "urgent", "胸痛2小时，排除气胸",
                                                 green_channel="胸痛"), actor=clinic, remote="10.0.0.5")
    assert doc["state"] == "requested" and doc["centre"] is None and doc["organization"] == "chengguan-thc"
    # Still arriving: stays requested.
    await world.add_study(uid, "chengguan-thc", ["CT"], received=False)
    with pytest.raises(NotFound):  # not routed yet, so on no reader's worklist
        await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang"))
    assert (await queries.get_request(world.store, doc["id"]))["state"] == "requested"
    event = await world.add_study(uid, "chengguan-thc", ["CT", "SR"])
    await wait_for(lambda: world.handled(event), what="study.received handled")
    queued = await queries.get_request(world.store, doc["id"])
    assert queued["state"] == "queued" and queued["centre"] == "county-imaging" and queued["modality"] == "CT"
    assert queued["patient_id"] == "P1"
    types = [e.type for e in await world.events(subject=doc["id"])]
    assert types == ["reading.requested", "reading.queued"]
    requested = (await world.events(subject=doc["id"]))[0]
    assert requested.data["waiting"] is True and requested.data["green_channel"] == "胸痛"


async def test_request_for_a_received_study_is_queued_at_once(world):
    await world.add_study(DX_UID, "chengguan-thc", ["DX"], announce=False)
    doc = await execute(world.rt, RequestReading(DX_UID, "imaging", "routine", "咳嗽一周", signed_resident=True),
                        actor=world.who("cg-clinic"))
    assert doc["state"] == "queued" and doc["centre"] == "county-imaging"
    assert doc["deadline"] == iso(T0 + 24 * 3600)  # routine imaging SLA
    audit = await world.store.find("audit", {"resource": f"reading/{doc['id']}"}, sort=(("time", 1),))
    assert {a["action"] for a in audit} == {"reading.request", "reading.queue"}
    assert all(a["actor"] == "cg-clinic" for a in audit)


async def test_bad_requests_are_rejected_with_a_precise_message(world):
    clinic = world.who("cg-clinic")
    cases = [(RequestReading("not-a-uid", "imaging", "routine", "q"), "study_uid"),
             (RequestReading(DX_UID, "xray", "routine", "q"), "kind must be one of imaging, ecg"),
             (RequestReading(DX_UID, "imaging", "asap", "q"), "priority must be one of"),
             (RequestReading(DX_UID, "imaging", "routine", "  "), "clinical_question must not be empty"),
             (RequestReading(DX_UID, "imaging", "routine", "q", green_channel="骨折"), "green_channel")]
    for command, message in cases:
        with pytest.raises(Invalid, match=message):
            await execute(world.rt, command, actor=clinic)
    assert await world.store.count("reading_requests") == 0
    assert await world.store.count("audit") == 0


async def test_scope_other_clinics_study_and_roles(world):
    await world.add_study(DX_UID, "dongba-thc", ["DX"], announce=False)
    waiting = await execute(world.rt, RequestReading(DX_UID, "imaging", "routine", "q"), actor=world.who("cg-clinic"))
    assert waiting["organization"] == "chengguan-thc" and waiting["patient_id"] is None  # as if it did not exist
    await execute(world.rt, CancelReading(waiting["id"], "oops"), actor=world.who("cg-clinic"))
    with pytest.raises(Forbidden):
        await execute(world.rt, RequestReading(DX_UID, "imaging", "routine", "q"), actor=world.who("dr-wang"))
    with pytest.raises(Forbidden):
        await execute(world.rt, RequestReading(DX_UID, "imaging", "routine", "q"), actor=world.who("auditor"))
    doc = await execute(world.rt, RequestReading(DX_UID, "imaging", "routine", "q"), actor=world.who("db-clinic"))
    for user in ("cg-clinic", "auditor", "dr-zhao", "dr-chen"):
        with pytest.raises(NotFound):
            await execute(world.rt, CancelReading(doc["id"], "oops"), actor=world.who(user))
    with pytest.raises(Forbidden):  # his centre's task, but readers do not cancel
        await execute(world.rt, CancelReading(doc["id"], "oops"), actor=world.who("dr-wang"))


async def test_cancel_before_claim_only(world):
    clinic = world.who("db-clinic")
    await world.add_study(DX_UID, "dongba-thc", ["DX"], announce=False)
    await world.add_study("1.2.3.9", "dongba-thc", ["DX"], announce=False)
    first = await execute(world.rt, RequestReading(DX_UID, "imaging", "routine", "q"), actor=clinic)
    cancelled = await execute(world.rt, CancelReading(first["id"], "患者已转上级医院"), actor=clinic)
    assert cancelled["state"] == "cancelled" and cancelled["cancellation"]["reason"] == "患者已转上级医院"
    assert [e.type for e in await world.events(subject=first["id"])][-1] == "reading.cancelled"
    with pytest.raises(IllegalTransition, match="state 'cancelled'"):
        await execute(world.rt, CancelReading(first["id"], "again"), actor=clinic)

    second = await execute(world.rt, RequestReading("1.2.3.9", "imaging", "routine", "q"), actor=clinic)
    await execute(world.rt, Claim(second["id"]), actor=world.who("dr-wang"))
    before = await queries.get_request(world.store, second["id"])
    with pytest.raises(IllegalTransition, match="cannot cancel a reading request in state 'claimed'"):
        await execute(world.rt, CancelReading(second["id"], "too late"), actor=clinic)
    assert await queries.get_request(world.store, second["id"]) == before


async def test_request_before_arrival_for_a_study_of_another_clinic_is_never_queued(world):
    uid = "1.2.3.77"
    doc = await execute(world.rt, RequestReading(uid, "imaging", "routine", "q"), actor=world.who("cg-clinic"))
    event = await world.add_study(uid, "dongba-thc", ["DX"])
    await wait_for(lambda: world.handled(event), what="handled")
    after = await queries.get_request(world.store, doc["id"])
    # left waiting, exactly like a request for a study that never arrives: nothing tells the clinic
    # that the UID exists at another organisation
    assert after == doc
    assert [e.type for e in await world.events(subject=doc["id"])] == ["reading.requested"]


async def test_a_study_of_another_clinic_is_answered_like_an_unknown_one(world):
    """Existence oracle: another organisation's Study UID and an unknown one get the same answer,
    field for field, even while the owner has an open request of the same kind."""
    foreign, unknown = "1.2.3.78", "1.2.3.79"
    await world.add_study(foreign, "dongba-thc", ["DX"], announce=False)
    await execute(world.rt, RequestReading(foreign, "imaging", "routine", "q"), actor=world.who("db-clinic"))
    clinic = world.who("cg-clinic")
    answers = [await execute(world.rt, RequestReading(uid, "imaging", "routine", "q"), actor=clinic)
               for uid in (foreign, unknown)]
    ignored = {"id", "study_uid", "history"}
    assert [{k: v for k, v in a.items() if k not in ignored} for a in answers] == \
        [{k: v for k, v in answers[1].items() if k not in ignored}] * 2
    assert answers[0]["state"] == "requested" and answers[0]["patient_name"] is None
    events = [e.data for a in answers for e in await world.events(subject=a["id"])]
    assert [e["waiting"] for e in events] == [True, True]


async def test_unroutable_request_waits_with_the_reason_and_the_event_is_not_lost(world):
    world.rt.consortium = dataclasses.replace(world.rt.consortium, routes=())  # a configuration gap
    event = await world.add_study(ECG_UID, "zhangzhuang-vc", ["ECG"])
    await wait_for(lambda: world.handled(event), what="study.received handled")
    doc = await queries.get_request(world.store, site_rule_request_id(ECG_UID, "ecg"))
    assert doc["state"] == "requested" and "no reading centre is configured for ecg" in doc["routing_error"]
    assert await world.store.count("dead_letters") == 0


async def test_another_clinics_waiting_request_does_not_stop_the_owners_site_rule(world):
    await execute(world.rt, RequestReading(ECG_UID, "ecg", "routine", "q"), actor=world.who("cg-clinic"))
    event = await world.add_study(ECG_UID, "zhangzhuang-vc", ["ECG"])
    await wait_for(lambda: world.handled(event), what="study.received handled")
    doc = await queries.get_request(world.store, site_rule_request_id(ECG_UID, "ecg"))
    assert doc is not None and doc["state"] == "queued" and doc["organization"] == "zhangzhuang-vc"


async def test_requests_that_waited_too_long_are_cancelled_alike_whether_the_uid_exists_elsewhere(world):
    """A Study UID nobody sent and one another clinic owns: both wait, and both are cancelled by the
    sweeper after ``wait_seconds`` with the same reason; a request whose study is here is left alone."""
    foreign, unknown, unroutable = "1.2.3.81", "1.2.3.82", ECG_UID
    event = await world.add_study(foreign, "dongba-thc", ["DX"])
    await wait_for(lambda: world.handled(event), what="handled")
    clinic = world.who("cg-clinic")
    waiting = [await execute(world.rt, RequestReading(uid, "imaging", "routine", "q"), actor=clinic)
               for uid in (foreign, unknown)]
    world.rt.consortium = dataclasses.replace(world.rt.consortium, routes=())  # a configuration gap
    event = await world.add_study(unroutable, "zhangzhuang-vc", ["ECG"])
    await wait_for(lambda: world.handled(event), what="handled")
    stuck = await queries.get_request(world.store, site_rule_request_id(unroutable, "ecg"))
    assert stuck["state"] == "requested" and stuck["routing_error"]

    world.clock.now = T0 + world.service.settings.wait_seconds - 1
    assert await world.service.sweep_waiting() == 0
    world.clock.now = T0 + world.service.settings.wait_seconds + 1
    assert await world.service.sweep_waiting() == 2
    after = [await queries.get_request(world.store, w["id"]) for w in waiting]
    assert [a["state"] for a in after] == ["cancelled", "cancelled"]
    reasons = [a["cancellation"]["reason"].replace(a["study_uid"], "UID") for a in after]
    assert reasons[0] == reasons[1] == "no study UID arrived from chengguan-thc within 7 days"
    events = [e.data for w in waiting for e in await world.events(subject=w["id"])]
    assert [(e["state"], e.get("reason")) for e in events] == \
        [("requested", None), ("cancelled", "study_not_received")] * 2
    assert (await queries.get_request(world.store, stuck["id"]))["state"] == "requested"
    assert await world.service.sweep_waiting() == 0
