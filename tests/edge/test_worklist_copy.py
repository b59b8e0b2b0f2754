"""The worklist copy's bookkeeping against a scripted centre (no network): a whole copy replaces
what the edge held, another clinic's order is never kept, an MPPS the centre refuses is set aside
while a refused token keeps the queue for later."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.core.store.sqlite import SqliteStore
from services.edge.link import LinkRefused
from services.edge.settings import EdgeSettings
from services.edge.worklist import EDGE_STEPS, ORDERS, STEPS, WorklistCopy


class Centre:
    """Answers the edge's calls from a script; records what it was sent."""

    def __init__(self) -> None:
        self.pages: list[dict] = []
        self.refuse: int | None = None
        self.reports: list[dict] = []

    async def worklist(self, since, offset=0):
        return self.pages.pop(0)

    async def procedure_step(self, report):
        if self.refuse:
            raise LinkRefused(self.refuse, "no")
        self.reports.append(report)
        return {"outcome": "created"}


def order(oid: str, state: str = "scheduled", org: str = "chengguan-thc", at: str = "2026-12-03T01:00:00.000Z") -> dict:
    return {"id": oid, "organization": org, "state": state, "on_worklist": state == "scheduled",
            "accession_number": "ACC" + oid, "scheduled_step_id": "SPS" + oid, "updated_at": at}


@pytest.fixture
async def copy(tmp_path):
    store = SqliteStore(f"sqlite:///{tmp_path / 'edge.db'}")
    await store.open()
    centre = Centre()
    settings = EdgeSettings(centre_url="http://127.0.0.1:1", token="t", organization="chengguan-thc")
    yield WorklistCopy(SimpleNamespace(store=store), centre, settings), centre, store
    await store.close()


async def test_a_whole_copy_replaces_the_local_one_and_keeps_only_this_clinic(copy):
    worklist, centre, store = copy
    for oid in ("old", "gone"):
        async with store.transaction() as tx:
            await tx.put(ORDERS, order(oid))
    centre.pages = [{"items": [order("a"), order("old"), order("b", org="dongba-thc")], "complete": True,
                     "cursor": "2026-12-03T01:00:00.000Z", "next_offset": None},
                    {"items": [order("a", "cancelled", at="2026-12-03T02:00:00.000Z"),
                               order("c", "in_progress", at="2026-12-03T02:00:00.000Z")],
                     "complete": False, "cursor": "2026-12-03T02:00:00.000Z", "next_offset": None}]
    await worklist.sync()
    assert sorted(d["id"] for d in await store.find(ORDERS)) == ["a", "old"]
    await worklist.sync()  # incremental: the cancelled order leaves, one in progress is kept off the worklist
    assert [(d["id"], d["on_worklist"]) for d in await store.find(ORDERS, sort=[("id", 1)])] == [
        ("c", False), ("old", True)]
    status = await worklist.status()
    assert (status["items"], status["orders"], status["age_seconds"] >= 0) == (1, 2, True)
    assert (await store.get("edge_state", "worklist"))["cursor"] == "2026-12-03T02:00:00.000Z"


async def test_mpps_refused_for_good_is_set_aside_a_refused_token_is_not(copy):
    worklist, centre, store = copy
    async with store.transaction() as tx:
        await tx.put(ORDERS, order("a"))
        await tx.put(STEPS, {"id": "1.2.3", "organization": "chengguan-thc", "calling_ae": "CG_CT1",
                             "status": "COMPLETED", "modality": "CT", "accession_numbers": ["ACCa"],
                             "scheduled_step_ids": [], "requested_procedure_ids": [], "study_uids": [],
                             "updated_at": "2026-12-03T01:00:00.000Z"})
    assert await worklist.discover_steps() == 1
    assert (await store.get(ORDERS, "a"))["on_worklist"] is False, "performed here: off the local worklist"
    centre.refuse = 401
    with pytest.raises(LinkRefused):
        await worklist.forward_steps()
    assert (await worklist.status())["steps_pending"] == 1
    centre.refuse = 409
    await worklist.forward_steps()
    status = await worklist.status()
    assert (status["steps_pending"], status["steps_refused"]) == (0, 1) and centre.reports == []
    assert await worklist.discover_steps() == 0, "an unchanged step is not queued again"
    assert (await store.get(EDGE_STEPS, "1.2.3"))["refused"].startswith("409")
