"""Every read or change of patient data leaves an audit record; only auditors (and admins) read them."""

from __future__ import annotations

from aiohttp import web

from services.api.app import create_app
from tests.support import free_port

CG_CT = "1.2.826.0.1.100.1"


async def audit_of(api, **where):
    return await api.rt.store.find("audit", where, sort=(("time", 1),))


async def test_reads_and_changes_are_audited_with_who_what_where(api):
    created = await api.create_request(CG_CT)
    rid = created["id"]
    await api.ok("GET", f"/api/v1/reading-requests/{rid}", "cg-clinic")
    await api.ok("GET", "/api/v1/worklist", "dr-wang")
    await api.ok("GET", f"/api/v1/studies/{CG_CT}", "dr-wang")
    await api.ok("GET", f"/api/v1/studies/{CG_CT}/priors", "dr-wang")
    await api.ok("POST", f"/api/v1/reading-requests/{rid}/claim", "dr-wang")

    (request_rec,) = await audit_of(api, action="reading.request")
    assert request_rec["actor"] == "cg-clinic" and request_rec["role"] == "clinic"
    assert request_rec["resource"] == f"reading/{rid}" and request_rec["organization"] == "chengguan-thc"
    assert request_rec["remote"] == "127.0.0.1" and request_rec["time"].endswith("Z")
    (read,) = await audit_of(api, action="reading.read")
    assert read["actor"] == "cg-clinic" and read["resource"] == f"reading/{rid}"
    (study_read,) = await audit_of(api, action="study.read")
    assert study_read["actor"] == "dr-wang" and study_read["resource"] == f"study/{CG_CT}"
    assert study_read["organization"] == "chengguan-thc"
    (priors,) = await audit_of(api, action="study.priors")
    assert "hongmiao-thc" in priors["detail"]["organizations"]
    (worklist,) = await audit_of(api, action="worklist.read")
    assert worklist["detail"]["request_ids"] == [rid]
    assert len(await audit_of(api, action="reading.claim", actor="dr-wang")) == 1


async def test_refused_access_is_audited_too(api):
    created = await api.create_request(CG_CT)
    status, _, _ = await api.call("GET", f"/api/v1/reading-requests/{created['id']}", user="db-clinic")
    assert status == 404
    (denied,) = await audit_of(api, actor="db-clinic", action="reading.read")
    assert denied["outcome"] == "not_found"
    status, _, _ = await api.call("POST", f"/api/v1/reading-requests/{created['id']}/claim", user="dr-chen")
    assert status == 404
    (refused,) = await audit_of(api, actor="dr-chen", action="reading.claim")
    assert refused["outcome"] == "not_found"


async def test_auditor_queries_the_log_with_filters(api):
    created = await api.create_request(CG_CT)
    await api.ok("GET", f"/api/v1/reading-requests/{created['id']}", "cg-clinic")
    await api.ok("GET", f"/api/v1/studies/{CG_CT}", "cg-clinic")

    page = await api.ok("GET", "/api/v1/audit?actor=cg-clinic", "auditor")
    assert {r["actor"] for r in page["items"]} == {"cg-clinic"}
    times = [r["time"] for r in page["items"]]
    assert times == sorted(times, reverse=True)
    page = await api.ok("GET", "/api/v1/audit?resource=study/*", "auditor")
    assert [r["action"] for r in page["items"]] == ["study.read"]
    page = await api.ok("GET", f"/api/v1/audit?resource=reading/{created['id']}&action=reading.read", "auditor")
    assert len(page["items"]) == 1
    first = (await audit_of(api))[0]["time"]
    assert (await api.ok("GET", f"/api/v1/audit?to={first}", "auditor"))["items"] == []
    assert (await api.ok("GET", "/api/v1/audit?from=2999-01-01T00:00:00Z", "auditor"))["items"] == []
    page = await api.ok("GET", "/api/v1/audit?limit=2&offset=1", "auditor")
    assert len(page["items"]) == 2 and page["next_offset"] == 3
    # the admin may read it too; reading it is itself recorded
    await api.ok("GET", "/api/v1/audit", "admin")
    assert len(await audit_of(api, action="audit.read")) >= 5


async def test_nobody_edits_the_audit_log(api):
    await api.create_request(CG_CT)
    before = await api.rt.store.find("audit")
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        for path in ("/api/v1/audit", f"/api/v1/audit/{before[0]['id']}"):
            for user in ("admin", "auditor"):
                status, _, _ = await api.call(method, path, user=user, json={"actor": "nobody"})
                assert status in (404, 405), (method, path, status)
    after = await api.rt.store.find("audit")
    assert [r for r in after if r["action"] != "audit.read"] == before


async def test_forwarded_for_is_believed_only_from_trusted_proxies(api):
    await api.create_request(CG_CT)
    headers = {"X-Forwarded-For": "10.9.8.7"}
    status, _, _ = await api.call("GET", f"/api/v1/studies/{CG_CT}", user="cg-clinic", headers=headers)
    assert status == 200
    (rec,) = await audit_of(api, action="study.read")
    assert rec["remote"] == "127.0.0.1"  # the peer is no trusted proxy: the header is ignored

    # the same runtime behind a proxy on loopback (YILIAN_TRUSTED_PROXIES=127.0.0.0/8)
    runner = web.AppRunner(create_app(api.rt, trusted_proxies="127.0.0.0/8"))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with api.session.get(f"http://127.0.0.1:{port}/api/v1/studies/{CG_CT}", headers={
                "Authorization": f"Bearer {api.token('cg-clinic')}",
                "X-Forwarded-For": "203.0.113.5, 10.9.8.7, 127.0.0.1"}) as resp:
            assert resp.status == 200
    finally:
        await runner.cleanup()
    newest = (await audit_of(api, action="study.read"))[-1]
    assert newest["remote"] == "10.9.8.7"  # the right-most address that is not a trusted proxy


async def test_group_commit_answers_each_reader_only_once_its_record_is_stored(api):
    import asyncio

    from services.api.auditing import AuditWriter
    writer = AuditWriter(api.rt.store)

    async def one(i: int) -> int:
        await writer.record(actor=f"u{i}", role="reader", action="study.read", resource=f"study/{i}")
        return await api.rt.store.count("audit", {"actor": f"u{i}"})

    assert await asyncio.gather(*(one(i) for i in range(100))) == [1] * 100
    # a record that cannot be written fails its own waiter only; its neighbours are stored
    results = await asyncio.gather(
        writer.record(actor="good1", role="reader", action="x", resource="y"),
        writer.record(actor="bad", role="reader", action="x", resource="y", detail={"x": object()}),
        writer.record(actor="good2", role="reader", action="x", resource="y"), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], TypeError) and results[2] is None
    assert await api.rt.store.count("audit", {"actor": "bad"}) == 0
    assert await api.rt.store.count("audit", {"actor": {"$in": ["good1", "good2"]}}) == 2


async def test_auditor_verifies_the_hash_chain_and_finds_an_edited_row(api):
    import json
    import sqlite3

    created = await api.create_request(CG_CT)
    await api.ok("GET", f"/api/v1/reading-requests/{created['id']}", "cg-clinic")
    await api.ok("GET", f"/api/v1/studies/{CG_CT}", "dr-wang")
    result = await api.ok("GET", "/api/v1/audit/verification", "auditor")
    assert result["intact"] and result["first_break"] is None and result["records"] == result["head_seq"] >= 3
    status, _, _ = await api.call("GET", "/api/v1/audit/verification", user="cg-clinic")
    assert status == 403

    # Someone with access to the database file rewrites who read the study.
    (read,) = await audit_of(api, action="study.read")
    with sqlite3.connect(api.rt.store.path) as db:
        db.execute('UPDATE "c_audit" SET doc = ? WHERE id = ?',
                   (json.dumps({**read, "actor": "nobody"}), read["id"]))
    result = await api.ok("GET", "/api/v1/audit/verification", "auditor")
    assert not result["intact"]
    assert result["first_break"]["seq"] == read["seq"] and result["first_break"]["problem"] == "altered"
    assert result["first_break"]["id"] == read["id"]
    (verified, _) = await audit_of(api, action="audit.verify")
    assert verified["actor"] == "auditor" and verified["outcome"] == "success"
