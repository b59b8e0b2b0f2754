"""The audit trail's hash chain on every store adapter: unbroken under concurrent writers, and an
altered, deleted or inserted record is found by ``audit.verify`` (issue 14)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from services.api.auditing import AuditWriter
from services.core import audit

from .adapters import STORE_ADAPTERS


@pytest.fixture(params=sorted(STORE_ADAPTERS))
async def store(request, tmp_path):
    async with STORE_ADAPTERS[request.param](tmp_path) as s:
        yield s


async def write_trail(store, n: int = 6) -> None:
    """Records by both paths: in a change's own transaction, and grouped reads (AuditWriter)."""
    writer = AuditWriter(store)
    for i in range(n // 2):
        async with store.transaction() as tx:
            await audit.record(tx, actor=f"dr-{i}", role="reader", action="reading.claim", resource=f"reading/{i}",
                               detail={"n": i, "姓名": "王五", "ratio": 0.5})
    await asyncio.gather(*(writer.record(actor="auditor", role="auditor", action="audit.read", resource="audit",
                                         detail={"i": i}) for i in range(n - n // 2)))


async def alter(store, seq: int, change: dict) -> None:
    """Edit a stored record behind the application's back, as someone with database access would."""
    doc = (await store.find("audit", {"seq": seq}))[0]
    if hasattr(store, "path"):  # SQLite: the row's JSON
        with sqlite3.connect(store.path) as db:
            db.execute('UPDATE "c_audit" SET doc = ? WHERE id = ?',
                       (json.dumps({**doc, **change}, ensure_ascii=False), doc["id"]))
    else:
        await store.db["audit"].update_one({"_id": doc["id"]}, {"$set": change})


async def remove(store, seq: int) -> None:
    doc = (await store.find("audit", {"seq": seq}))[0]
    if hasattr(store, "path"):
        with sqlite3.connect(store.path) as db:
            db.execute('DELETE FROM "c_audit" WHERE id = ?', (doc["id"],))
    else:
        await store.db["audit"].delete_one({"_id": doc["id"]})


async def test_an_untouched_trail_verifies(store):
    empty = await audit.verify(store)
    assert empty.intact and empty.records == 0 and empty.head_seq == 0
    await write_trail(store, 6)
    result = await audit.verify(store, page=4)  # more than one page
    assert result.intact, result.first_break
    assert result.records == 6 and result.head_seq == 6 and result.first_break is None
    seqs = sorted(d["seq"] for d in await store.find("audit"))
    assert seqs == [1, 2, 3, 4, 5, 6]


async def test_an_edited_record_is_found(store):
    await write_trail(store, 6)
    await alter(store, 3, {"actor": "someone-else"})
    result = await audit.verify(store)
    assert not result.intact
    assert (result.first_break.seq, result.first_break.problem) == (3, "altered")
    assert result.records == 2


async def test_an_edited_and_rehashed_record_is_found_by_the_next_link(store):
    await write_trail(store, 6)
    doc = (await store.find("audit", {"seq": 2}))[0]
    forged = {**doc, "outcome": "denied"}
    await alter(store, 2, {"outcome": "denied", "hash": audit.digest(forged)})
    result = await audit.verify(store)
    assert (result.first_break.seq, result.first_break.problem) == (2, "altered")


async def test_a_deleted_record_is_found(store):
    await write_trail(store, 6)
    await remove(store, 4)
    result = await audit.verify(store)
    assert not result.intact
    assert (result.first_break.seq, result.first_break.problem) == (4, "missing")


async def test_a_deleted_last_record_is_found_by_the_head(store):
    await write_trail(store, 4)
    await remove(store, 4)
    result = await audit.verify(store)
    assert (result.first_break.seq, result.first_break.problem) == (4, "missing")


async def test_a_rolled_back_change_leaves_no_record_and_no_gap(store):
    await write_trail(store, 2)
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await audit.record(tx, actor="a", role="admin", action="config.change", resource="consortium/x")
            raise RuntimeError("the change failed")
    await write_trail(store, 2)
    result = await audit.verify(store)
    assert result.intact and result.records == 4


async def test_concurrent_writers_in_one_process_make_one_chain(store):
    writers = [AuditWriter(store, max_batch=3) for _ in range(3)]

    async def in_tx(i: int) -> None:
        async with store.transaction() as tx:
            await audit.record(tx, actor=f"u{i}", role="reader", action="reading.sign", resource=f"reading/{i}")
    await asyncio.gather(*(w.record(actor=f"r{i}", role="clinic", action="study.read", resource="study/1")
                           for i in range(10) for w in writers), *(in_tx(i) for i in range(10)))
    result = await audit.verify(store)
    assert result.intact, result.first_break
    assert result.records == 40 == await store.count("audit")


WRITER = textwrap.dedent("""
    import asyncio, sys
    from services.api.auditing import AuditWriter
    from services.core import audit
    from services.core.store.sqlite import SqliteStore

    async def main(url, name, n):
        store = SqliteStore(url)
        await store.open()
        writer = AuditWriter(store, max_batch=4)
        async def in_tx(i):
            async with store.transaction() as tx:
                await audit.record(tx, actor=name, role="reader", action="reading.sign", resource=f"reading/{i}")
        await asyncio.gather(*(writer.record(actor=name, role="clinic", action="study.read", resource=f"study/{i}")
                               for i in range(n)), *(in_tx(i) for i in range(n)))
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


async def test_writers_in_several_processes_on_one_sqlite_file_make_one_chain(tmp_path):
    from services.core.store.sqlite import SqliteStore
    url = f"sqlite:///{tmp_path / 'shared.db'}?synchronous=NORMAL"
    store = SqliteStore(url)
    await store.open()
    try:
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, f"p{i}", "40"]) for i in range(3)]
        for p in procs:
            assert await asyncio.to_thread(p.wait, 60) == 0
        result = await audit.verify(store)
        assert result.intact, result.first_break
        assert result.records == 240 == await store.count("audit")
        assert {d["actor"] for d in await store.find("audit")} == {"p0", "p1", "p2"}
    finally:
        await store.close()
