"""Orders without DICOM networking: the quiet-period path (no MPPS), MPPS events as the gateway emits
them, scope of linking, and the pure model (transitions, demographic comparison)."""

from __future__ import annotations

import pytest

from services.core.events import Event
from services.workflow.errors import IllegalTransition
from services.workflow.orders import model
from services.workflow.orders.commands import CancelOrder, CreateOrder
from services.workflow.orders.service import request_id_for
from services.workflow.service import execute

from ..support import wait_for
from ..workflow.conftest import world  # noqa: F401 - the fixture

ORDER = dict(patient_id="P1", patient_name="张^三", kind="imaging", modality="CT", clinical_question="头痛",
             requesting_physician="李^医生", scheduled_at="2026-11-18T09:00:00+08:00", sex="M",
             birth_date="19600101", priority="urgent", green_channel="卒中")


async def _study(world, uid: str, organization: str, accession: str, **patient) -> Event:  # noqa: F811
    fields = {"patient_id": "P1", "patient_name": "张^三", "sex": "M", "birth_date": "19600101", **patient}
    async with world.store.transaction() as tx:
        await tx.put("studies", {"id": uid, "organization": organization, "modalities": ["CT"], "state": "received",
                                 "revision": 1, "series_count": 1, "instance_count": 3,
                                 "accession_number": accession, **fields})
    event = Event("study.received", subject=uid, source="/yilian/pacs_gateway", data={
        "study_uid": uid, "organization": organization, "series_count": 1, "instance_count": 3,
        "modalities": ["CT"], "revision": 1, "patient_id": fields["patient_id"], "accession_number": accession})
    await world.rt.bus.publish(event)
    return event


async def test_without_mpps_the_quiet_period_completes_the_order_and_queues_its_request(world):  # noqa: F811
    order = await execute(world.rt, CreateOrder(**ORDER), actor=world.who("cg-clinic"))
    # Another township's study with the same Accession Number never links (nor its patient data)
    other = await _study(world, "1.2.3.9", "dongba-thc", order["accession_number"])
    await wait_for(lambda: world.handled(other), timeout=5, what="other study handled")
    assert (await world.store.get("orders", order["id"]))["state"] == "scheduled"

    event = await _study(world, "1.2.3.1", "chengguan-thc", order["accession_number"], birth_date="19610101")
    await wait_for(lambda: world.handled(event), timeout=5, what="study.received handled")
    done = await world.store.get("orders", order["id"])
    assert (done["state"], done["study_uid"], done["on_worklist"]) == ("completed", "1.2.3.1", False)
    assert done["demographic_mismatches"] == [{"field": "birth_date", "order": "19600101", "study": "19610101"}]
    request = await world.store.get("reading_requests", request_id_for(order["id"]))
    assert (request["state"], request["centre"], request["priority"], request["green_channel"]) == (
        "queued", "county-imaging", "urgent", "卒中")
    assert [m["field"] for m in request["demographic_mismatches"]] == ["birth_date"]
    # Re-announced (late instances): still one request
    again = await _study(world, "1.2.3.1", "chengguan-thc", order["accession_number"])
    await wait_for(lambda: world.handled(again), timeout=5, what="re-announcement handled")
    assert await world.store.count("reading_requests", {"study_uid": "1.2.3.1"}) == 1
    # A second study with the same Accession Number is its own: the order keeps the first
    second = await _study(world, "1.2.3.2", "chengguan-thc", order["accession_number"])
    await wait_for(lambda: world.handled(second), timeout=5, what="second study handled")
    assert (await world.store.get("orders", order["id"]))["study_uid"] == "1.2.3.1"
    assert (await world.store.get("reading_requests", request_id_for(order["id"])))["study_uid"] == "1.2.3.1"
    types = [e.type for e in await world.events(subject=order["id"])]
    assert types == ["order.created", "order.study_linked", "order.completed"]


async def test_mpps_moves_the_order_and_completed_before_the_images_waits_for_them(world):  # noqa: F811
    order = await execute(world.rt, CreateOrder(**ORDER), actor=world.who("cg-clinic"))

    def mpps(status: str, organization: str = "chengguan-thc") -> Event:
        return Event("procedure_step.reported", subject="1.2.9.1", source="/yilian/pacs_gateway", data={
            "sop_instance_uid": "1.2.9.1", "status": status, "organization": organization, "calling_ae": "CG_CT1",
            "accession_numbers": [order["accession_number"]], "scheduled_step_ids": [order["scheduled_step_id"]],
            "requested_procedure_ids": [], "study_uids": [order["study_instance_uid"]], "modality": "CT"})

    async def state() -> str:
        return (await world.store.get("orders", order["id"]))["state"]

    # Another township's MPPS naming this order's identifiers moves nothing
    await world.rt.bus.publish(mpps("IN PROGRESS", "dongba-thc"))
    await world.rt.bus.publish(mpps("IN PROGRESS"))
    await wait_for(lambda: _is(state, "in_progress"), timeout=5, what="in progress")
    with pytest.raises(IllegalTransition):
        await execute(world.rt, CancelOrder(order["id"], "too late"), actor=world.who("cg-clinic"))
    await world.rt.bus.publish(mpps("COMPLETED"))
    await wait_for(lambda: _is(state, "completed"), timeout=5, what="completed")
    rid = request_id_for(order["id"])
    waiting = await world.store.get("reading_requests", rid)
    assert (waiting["state"], waiting["study_uid"]) == ("requested", order["study_instance_uid"])
    # The images come after the COMPLETED, under the worklist's Study UID: the quiet period queues it
    event = await _study(world, order["study_instance_uid"], "chengguan-thc", order["accession_number"])
    await wait_for(lambda: world.handled(event), timeout=5, what="study.received handled")
    assert (await world.store.get("reading_requests", rid))["state"] == "queued"


async def _is(read, wanted: str) -> bool:
    return await read() == wanted


def test_transitions_and_demographics():
    doc = {"state": "scheduled", "version": 0, "history": []}
    started = model.transition(doc, "start", at="t", by="system:workflow")
    assert (started["state"], started["on_worklist"], started["version"]) == ("in_progress", False, 1)
    for state, action in (("in_progress", "change"), ("in_progress", "cancel"), ("completed", "start"),
                          ("cancelled", "complete")):
        with pytest.raises(IllegalTransition, match=f"cannot {action} an order in state '{state}'"):
            model.require(state, action)
    order = {"patient_id": "P1", "patient_name": "张^三", "sex": "M", "birth_date": "19600101"}
    assert model.mismatches(order, {"patient_id": "P1", "patient_name": "Zhang^San=张^三", "sex": "M",
                                    "birth_date": "19600101"}) == []
    assert model.mismatches(order, {"patient_id": "p1", "patient_name": "ZHANG^SAN", "sex": "F",
                                    "birth_date": ""}) == [
        {"field": "patient_name", "order": "张^三", "study": "ZHANG^SAN"},
        {"field": "sex", "order": "M", "study": "F"}]
    assert len(model.accession_number()) <= 16 and model.study_instance_uid().startswith("2.25.")


async def test_the_orders_resident_id_gives_the_linked_study_its_consortium_identity(world):  # noqa: F811
    """A modality that drops Other Patient IDs Sequence: the order's resident ID is the study's
    identity (docs/identity.md), so its priors follow it; never carried by the events."""
    order = await execute(world.rt, CreateOrder(**ORDER, resident_id="11010519491231002x"),
                          actor=world.who("cg-clinic"))
    event = await _study(world, "1.2.3.5", "chengguan-thc", order["accession_number"])
    await wait_for(lambda: world.handled(event), timeout=5, what="study.received handled")
    assert (await world.store.get("studies", "1.2.3.5"))["identity"] == "CN_RESIDENT_ID|11010519491231002X"
    # A study that carries its own identity keeps it
    order2 = await execute(world.rt, CreateOrder(**{**ORDER, "patient_id": "P2"}, resident_id="11010519491231002X"),
                           actor=world.who("cg-clinic"))
    event = await _study(world, "1.2.3.6", "chengguan-thc", order2["accession_number"], patient_id="P2",
                         identity="CN_HEALTH_CARD|H12345678")
    await wait_for(lambda: world.handled(event), timeout=5, what="second study.received handled")
    assert (await world.store.get("studies", "1.2.3.6"))["identity"] == "CN_HEALTH_CARD|H12345678"
    for logged in await world.events():
        assert "11010519491231002X" not in repr(logged.data)
