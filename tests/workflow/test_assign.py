"""A coordinator assigns a task of his centre to a named reader of it (issue 4: move / reassign tasks)."""

from __future__ import annotations

import asyncio

import pytest

from services.workflow import queries
from services.workflow.commands import AssignToReader, CancelReading, Claim, SaveDraft, Sign
from services.workflow.errors import Conflict, Forbidden, IllegalTransition, Invalid, NotFound
from services.workflow.service import execute

from .conftest import LEASE_SECONDS
from .test_reading import queued_ct


async def assign(world, rid, reader="dr-li", by="coord-county", reason="王医生下班，转李医生"):
    return await execute(world.rt, AssignToReader(rid, reader, reason), actor=world.who(by))


async def test_assign_a_queued_task_claims_it_for_the_reader(world):
    doc = await queued_ct(world)
    done = await assign(world, doc["id"])
    assert (done["state"], done["claimed_by"], done["claimed_by_name"]) == ("claimed", "dr-li", "李秀英")
    assert done["claimed_at"] == done["updated_at"]
    assert done["lease_expires_at"] > done["claimed_at"]  # a fresh lease, exactly like a claim
    assert done["history"][-1]["action"] == "assign" and done["history"][-1]["by"] == "coord-county"
    event = [e for e in await world.events(subject=doc["id"]) if e.type == "reading.assigned"][0]
    assert event.subject == doc["id"]
    assert {k: event.data[k] for k in ("reader_id", "previous_holder", "assigned_by", "reason", "centre",
                                        "lease_expires_at")} == {
        "reader_id": "dr-li", "previous_holder": None, "assigned_by": "coord-county", "reason": "王医生下班，转李医生",
        "centre": "county-imaging", "lease_expires_at": done["lease_expires_at"]}
    audit = await world.store.find("audit", {"action": "reading.assign"})
    assert len(audit) == 1 and audit[0]["actor"] == "coord-county" and audit[0]["traceparent"] == event.traceparent
    assert audit[0]["detail"]["reader_id"] == "dr-li" and audit[0]["detail"]["previous_holder"] is None
    # The assignee works on it like on his own claim.
    signed = await execute(world.rt, Sign(doc["id"], "未见异常", "正常"), actor=world.who("dr-li"))
    assert signed["state"] == "signed" and signed["signed_by"] == "dr-li"


async def test_assign_a_held_task_takes_the_lease_from_its_holder_and_keeps_the_draft(world):
    doc = await queued_ct(world)
    await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang"))
    drafted = await execute(world.rt, SaveDraft(doc["id"], "主动脉增宽", "考虑夹层"), actor=world.who("dr-wang"))
    world.clock.advance(LEASE_SECONDS / 2)
    done = await assign(world, doc["id"])
    assert (done["state"], done["claimed_by"]) == ("draft", "dr-li")
    assert done["draft"] == drafted["draft"]
    assert done["lease_expires_at"] > drafted["lease_expires_at"]
    event = [e for e in await world.events(subject=doc["id"]) if e.type == "reading.assigned"][0]
    assert event.data["previous_holder"] == "dr-wang" and event.data["state"] == "draft"
    # The previous holder lost the lease: he can no longer draft or sign.
    for command in (SaveDraft(doc["id"], "x", "y"), Sign(doc["id"])):
        with pytest.raises(Conflict, match="held by another reader"):
            await execute(world.rt, command, actor=world.who("dr-wang"))
    signed = await execute(world.rt, Sign(doc["id"]), actor=world.who("dr-li"))  # from the kept draft
    report = await world.store.get("reports", signed["report_id"])
    assert (report["impression"], report["reader_id"]) == ("考虑夹层", "dr-li")


async def test_admin_may_assign_and_the_assignee_keeps_it_from_a_plain_claim(world):
    doc = await queued_ct(world)
    await assign(world, doc["id"], reader="dr-wang", by="admin")
    with pytest.raises(Conflict, match="already claimed"):
        await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-li"))


async def test_a_concurrent_claim_and_assignment_cannot_both_win(world):
    for i in range(5):
        doc = await queued_ct(world, uid=f"1.2.826.0.1.3680043.8.498.6{i}")
        results = await asyncio.gather(execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang")),
                                       assign(world, doc["id"]), return_exceptions=True)
        stored = await queries.get_request(world.store, doc["id"])
        wins = [r for r in results if isinstance(r, dict)]
        # Either one wins and the other is refused, or the assignment ran second and took it over.
        assert wins and stored["claimed_by"] == ("dr-li" if len(wins) == 2 else wins[0]["claimed_by"])
        assert all(isinstance(r, (dict, Conflict)) for r in results), results
        history = [h["action"] for h in stored["history"]]
        assert history.count("claim") + history.count("assign") == len(wins)
        assert stored["version"] == 1 + len(wins)  # routed, then one change per winner


async def _refused(world, doc, exc, match, **kw):
    before = await queries.get_request(world.store, doc["id"])
    events = len(await world.events())
    with pytest.raises(exc, match=match):
        await assign(world, doc["id"], **kw)
    assert await queries.get_request(world.store, doc["id"]) == before
    assert len(await world.events()) == events
    assert await world.store.count("audit", {"action": "reading.assign"}) == 0


async def test_refusals_change_nothing(world):
    doc = await queued_ct(world)
    await _refused(world, doc, Invalid, "reads for centre city-imaging, not county-imaging", reader="dr-chen")
    await _refused(world, doc, Invalid, "coord-ecg is a coordinator, not a reader", reader="coord-ecg")
    await _refused(world, doc, Invalid, "no user 'nobody'", reader="nobody")
    await _refused(world, doc, Invalid, "reason must not be empty", reason=" ")
    await _refused(world, doc, NotFound, "no reading request", by="coord-city")  # another centre's coordinator
    await _refused(world, doc, Forbidden, "a reader may not assign", by="dr-wang")
    await _refused(world, doc, Forbidden, "a clinic may not assign", by="cg-clinic")
    await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-li"))
    await _refused(world, doc, Invalid, "dr-li already holds", reader="dr-li")


async def test_assign_on_final_states_is_an_illegal_transition(world):
    doc = await queued_ct(world)
    await execute(world.rt, Claim(doc["id"]), actor=world.who("dr-wang"))
    await execute(world.rt, Sign(doc["id"], "f", "i"), actor=world.who("dr-wang"))
    await _refused(world, doc, IllegalTransition, "cannot assign a reading request in state 'signed'")
    other = await queued_ct(world, uid="1.2.826.0.1.3680043.8.498.501")
    await execute(world.rt, CancelReading(other["id"], "重复申请"), actor=world.who("cg-clinic"))
    await _refused(world, other, IllegalTransition, "state 'cancelled'")
