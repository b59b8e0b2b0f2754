"""``queries.worklist`` with filters: the same rows in the same order, served by an index (no scan
of the whole centre), on the SQLite adapter."""

from __future__ import annotations

import random

import pytest

from services.core.store.sqlite import compile_filter, compile_sort
from services.workflow import queries
from services.workflow.model import PRIORITY_RANK, WORKLIST_SORT

from ..contract.adapters import sqlite_store

ORGS = ["chengguan-thc", "dongba-thc", "hongmiao-thc"]
MODALITIES = ["DX", "CR", "US", "CT"]


def task(i: int, rng: random.Random) -> dict:
    priority = rng.choice(["stat", "urgent", "routine", "routine"])
    return {"id": f"rr-{i:04d}", "centre": rng.choice(["county-imaging", "city-imaging"]),
            "on_worklist": rng.random() < 0.9, "state": "queued", "kind": "imaging",
            "organization": rng.choice(ORGS), "modality": rng.choice(MODALITIES), "priority": priority,
            "priority_rank": PRIORITY_RANK[priority], "boost_rank": rng.choice([0, 1, 2, 2]),
            "deadline": f"2026-11-2{rng.randint(3, 5)}T{rng.randint(10, 23)}:00:00Z",
            "requested_at": f"2026-11-23T0{rng.randint(0, 9)}:00:00Z"}


@pytest.fixture
async def store(tmp_path):
    async with sqlite_store(tmp_path) as s:
        rng = random.Random(14)
        async with s.transaction() as tx:
            for i in range(600):
                await tx.insert("reading_requests", task(i, rng))
        yield s


def expected(docs: list[dict], **match) -> list[str]:
    rows = [d for d in docs if d["centre"] == "county-imaging" and d["on_worklist"]
            and all(d[k] == v for k, v in match.items())]
    rows.sort(key=lambda d: (*(d[f] for f, _ in WORKLIST_SORT), d["id"]))
    return [d["id"] for d in rows]


@pytest.mark.parametrize("filters,match", [
    ({}, {}),
    ({"origin": "hongmiao-thc"}, {"organization": "hongmiao-thc"}),
    ({"modality": "CT"}, {"modality": "CT"}),
    ({"priority": "stat"}, {"priority": "stat"}),
    ({"priority": "routine", "origin": "dongba-thc"}, {"priority": "routine", "organization": "dongba-thc"}),
])
async def test_filtered_worklists_keep_their_rows_and_order(store, filters, match):
    docs = await store.find("reading_requests")
    want = expected(docs, **match)
    got = await queries.worklist(store, centre="county-imaging", **filters, limit=500)
    assert [d["id"] for d in got] == want
    page = await queries.worklist(store, centre="county-imaging", **filters, limit=7, offset=3)
    assert [d["id"] for d in page] == want[3:10]


@pytest.mark.parametrize("where,sort", [
    ({"centre": "c", "on_worklist": True}, WORKLIST_SORT),
    ({"centre": "c", "on_worklist": True, "organization": "o"}, WORKLIST_SORT),
    ({"centre": "c", "on_worklist": True, "modality": "CT"}, WORKLIST_SORT),
    ({"centre": "c", "on_worklist": True, "priority": "stat", "priority_rank": 0}, WORKLIST_SORT[1:]),
])
async def test_the_worklist_questions_walk_an_index_in_order(store, where, sort):
    """A full sort (``TEMP B-TREE FOR ORDER BY``) or a scan would read every task of the centre."""
    clause, params = compile_filter(where)
    sql = f'SELECT doc FROM "c_reading_requests" WHERE {clause} {compile_sort(sort)} LIMIT 50'
    plan = " | ".join(r[3] for r in await store._reader.run(lambda db: db.execute(
        "EXPLAIN QUERY PLAN " + sql, params).fetchall()))
    assert "USING INDEX ix_reading_requests_centre_on_worklist_" in plan, plan
    assert "B-TREE FOR ORDER BY" not in plan and "SCAN" not in plan, plan
