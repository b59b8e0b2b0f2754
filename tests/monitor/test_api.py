"""The monitor through HTTP: who sees which figures, the SSE stream, /metrics and its JSON twin."""

from __future__ import annotations

import asyncio
import json

from services.monitor.readmodel import iso

from ..support import wait_for

CT = "1.2.826.0.1.300."


async def small_day(world) -> dict[str, str]:
    """Two chengguan CTs at county-imaging: one signed after 20 min, one still waiting."""
    await world.add_study(CT + "1", "chengguan-thc", ["CT"])
    await world.add_study(CT + "2", "chengguan-thc", ["CT"])
    await world.settle()
    done = await world.request(CT + "1", "cg-clinic")
    waiting = await world.request(CT + "2", "cg-clinic", priority="stat")
    await world.claim(done["id"], "dr-wang")
    world.clock.advance(20 * 60)
    await world.sign(done["id"], "dr-wang")
    await world.settle()
    return {"done": done["id"], "waiting": waiting["id"]}


async def test_coordinator_sees_his_centre_admin_all_others_refused(world):
    ids = await small_day(world)
    status, body = await world.get("/api/v1/monitor/centres", "coord-county")
    assert status == 200 and [c["centre"] for c in body["centres"]] == ["county-imaging"]
    county = body["centres"][0]
    assert county["queue"]["waiting"] == 1 and county["queue"]["in_progress"] == 0
    stat = next(c for c in county["queue"]["by"] if c["kind"] == "imaging" and c["priority"] == "stat")
    assert stat["waiting"] == 1
    assert county["oldest_waiting"]["request_id"] == ids["waiting"]
    assert county["oldest_waiting"]["waiting_seconds"] == 20 * 60
    # STAT imaging has a 30 min SLA: 20 of 30 minutes gone is not yet 80 %
    assert county["at_risk_count"] == 0 and county["past_deadline_count"] == 0
    assert county["turnaround"]["today"] == {"count": 1, "p50_seconds": 1200.0, "p90_seconds": 1200.0}
    wang = next(r for r in county["readers"] if r["reader_id"] == "dr-wang")
    assert wang == {"reader_id": "dr-wang", "name": "王建国", "on_duty": True, "claimed": 0, "signed_today": 1}
    # time passes: 25 min into the SLA it is at risk, after 30 min past its deadline
    world.clock.advance(5 * 60)
    _, body = await world.get("/api/v1/monitor/centres/county-imaging", "admin")
    assert body["centres"][0]["at_risk_count"] == 1 and body["centres"][0]["at_risk"][0]["request_id"] == ids["waiting"]
    world.clock.advance(5 * 60)
    _, body = await world.get("/api/v1/monitor/centres/county-imaging", "coord-county")
    assert body["centres"][0]["past_deadline_count"] == 1 and body["centres"][0]["at_risk_count"] == 0

    status, body = await world.get("/api/v1/monitor/centres", "admin")
    assert status == 200 and len(body["centres"]) == len(world.rt.consortium.centres)
    for user in ("dr-wang", "cg-clinic", "auditor"):
        status, problem = await world.get("/api/v1/monitor/centres", user)
        assert status == 403, (user, status)
        assert problem["status"] == 403
    status, _ = await world.get("/api/v1/monitor/centres/city-imaging", "coord-county")
    assert status == 404
    status, _ = await world.get("/api/v1/monitor/centres/nowhere", "admin")
    assert status == 404
    for path in ("/api/v1/monitor/sites", "/api/v1/monitor/consortium", "/api/v1/monitor/metrics"):
        assert (await world.get(path, "coord-county"))[0] == 403
        assert (await world.get(path))[0] == 401

    status, sites = await world.get("/api/v1/monitor/sites", "admin")
    cg = next(s for s in sites["sites"] if s["organization"] == "chengguan-thc")
    assert (cg["studies_sent"], cg["readings_requested"], cg["readings_signed"]) == (2, 2, 1)
    status, k = await world.get("/api/v1/monitor/consortium", "admin")
    assert k["townships"] == 3 and k["townships_served"] == 1
    assert abs(k["share_of_townships_served"] - 1 / 3) < 1e-9
    assert k["median_turnaround_seconds"]["today"] == 1200.0


async def read_events(resp, count: int) -> list[dict]:
    out, buffer = [], b""
    while len(out) < count:
        buffer += await resp.content.readany()
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            data = [line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
            if data:
                out.append(json.loads(b"\n".join(data)))
    return out


async def test_stream_pushes_a_snapshot_then_every_change(world):
    await world.add_study(CT + "9", "chengguan-thc", ["CT"])
    await world.settle()
    headers = {"Authorization": f"Bearer {world.token('coord-county')}"}
    async with world.session.get(world.base + "/api/v1/monitor/stream", headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        first = (await asyncio.wait_for(read_events(resp, 1), 10))[0]
        assert first["centres"][0]["queue"]["waiting"] == 0 and "sites" not in first
        await world.request(CT + "9", "cg-clinic")
        second = (await asyncio.wait_for(read_events(resp, 1), 10))[0]
        assert second["centres"][0]["queue"]["waiting"] == 1
    # a bad token never opens a stream
    async with world.session.get(world.base + "/api/v1/monitor/stream",
                                 headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401


async def test_metrics_text_and_json(world):
    await small_day(world)
    await world.get("/api/v1/monitor/centres", "coord-county")
    async with world.session.get(world.base + "/metrics") as resp:  # public, like /healthz
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    lines = set(text.splitlines())
    assert 'yilian_queue_depth{centre="county-imaging",kind="imaging",priority="stat",state="queued"} 1' in lines
    assert 'yilian_turnaround_seconds_bucket{centre="county-imaging",kind="imaging",priority="routine",le="1800"} 1' in lines
    assert 'yilian_turnaround_seconds_count{centre="county-imaging",kind="imaging",priority="routine"} 1' in lines
    assert 'yilian_bus_lag_events{group="monitor"} 0' in lines
    assert 'yilian_http_requests_total{method="GET",route="/api/v1/monitor/centres",status="200"} 1' in lines
    assert "# TYPE yilian_http_request_duration_seconds histogram" in lines
    assert 'yilian_queue_oldest_waiting_seconds{centre="county-imaging"} 1200' in lines
    status, body = await world.get("/api/v1/monitor/metrics", "admin")
    depth = body["metrics"]["yilian_queue_depth"]
    assert depth["type"] == "gauge" and {"name": "yilian_queue_depth", "value": 1, "labels": {
        "centre": "county-imaging", "kind": "imaging", "priority": "stat", "state": "queued"}} in depth["samples"]


async def test_dashboard_page_is_public_self_contained_and_locked_down(world):
    async with world.session.get(world.base + "/dashboard") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert '<html lang="zh-CN">' in page and "src=" not in page.split("<script>")[0]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp and "connect-src 'self'" in csp
    # the token is never accepted from the URL
    status, _ = await world.get(f"/api/v1/monitor/centres?access_token={world.token('admin')}")
    assert status == 401
    assert iso(0) == "1970-01-01T00:00:00.000Z"
