"""Two gateway worker processes report MPPS COMPLETED for the same order at the same time (each
its own ``procedure_step.reported``): exactly one reading request, one order.completed.  Each
completion is handled by its own store connection on the same SQLite file, as two workflow
processes would; the order's transition is a compare-and-set on its version and the request's
id is derived from the order's, so whichever commits second finds the order completed."""

from __future__ import annotations

import asyncio
import dataclasses

from services.core.events import Event
from services.core.runtime import make_store
from services.workflow.errors import Conflict
from services.workflow.orders.commands import CreateOrder
from services.workflow.orders.service import on_procedure_step, request_id_for
from services.workflow.service import execute

from ..workflow.conftest import world  # noqa: F401 - the fixture
from .test_order_flow import ORDER


def _completed(order: dict, sop_instance_uid: str, calling_ae: str) -> Event:
    return Event("procedure_step.reported", subject=sop_instance_uid, source="/yilian/pacs_gateway", data={
        "sop_instance_uid": sop_instance_uid, "status": "COMPLETED", "organization": "chengguan-thc",
        "calling_ae": calling_ae, "accession_numbers": [order["accession_number"]],
        "scheduled_step_ids": [order["scheduled_step_id"]], "requested_procedure_ids": [],
        "study_uids": [order["study_instance_uid"]], "modality": "CT"})


async def test_two_concurrent_mpps_completions_make_one_reading_request(world):  # noqa: F811
    order = await execute(world.rt, CreateOrder(**ORDER), actor=world.who("cg-clinic"))
    async with world.store.transaction() as tx:  # the images are indexed: COMPLETED queues the request at once
        await tx.put("studies", {"id": order["study_instance_uid"], "organization": "chengguan-thc",
                                 "modalities": ["CT"], "state": "receiving", "revision": 0, "series_count": 1,
                                 "instance_count": 3, "accession_number": order["accession_number"],
                                 "patient_id": "P1", "patient_name": "张^三", "sex": "M", "birth_date": "19600101"})
    other = make_store(world.rt.settings.store_url, world.rt.validate)  # a second process's connection
    await other.open()
    try:
        second_process = dataclasses.replace(world.rt, store=other)
        first, second = _completed(order, "1.2.9.1", "CG_CT1"), _completed(order, "1.2.9.2", "CG_CT1")
        outcomes = await asyncio.gather(on_procedure_step(world.rt, first), on_procedure_step(second_process, second),
                                        return_exceptions=True)
        # A lost compare-and-set is a Conflict the bus redelivers: handled again, it changes nothing more.
        assert all(o is None or isinstance(o, Conflict) for o in outcomes), outcomes
        for outcome, rt, event in zip(outcomes, (world.rt, second_process), (first, second)):
            if isinstance(outcome, Conflict):
                await on_procedure_step(rt, event)
    finally:
        await other.close()

    requests = await world.store.find("reading_requests", {"order_id": order["id"]})
    assert [r["id"] for r in requests] == [request_id_for(order["id"])]
    assert requests[0]["state"] == "queued"
    done = await world.store.get("orders", order["id"])
    assert done["state"] == "completed"
    assert sorted(s["sop_instance_uid"] for s in done["performed_steps"]) == ["1.2.9.1", "1.2.9.2"]  # both noted
    types = [e.type for e in await world.events(subject=order["id"])]
    assert types.count("order.completed") == 1
    requested = [e for e in await world.events(types=("reading.requested",)) if e.data.get("order_id") == order["id"]]
    assert len(requested) == 1
