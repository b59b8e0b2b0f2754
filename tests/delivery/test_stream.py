"""Live push: a clinic screen connected to /api/v1/results/stream gets the result the moment it
is delivered, only its own organisation's, with heartbeats and Last-Event-ID resume."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from ..support import wait_for


class Stream:
    """A Server-Sent Events client: parses ``id``/``event``/``data`` frames and comments."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.comments: list[str] = []

    async def next_event(self, timeout: float = 20.0) -> dict[str, Any]:
        frame: dict[str, Any] = {}
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.resp.content.readline()).decode()
                if line == "":
                    raise EOFError("stream closed")
                line = line.rstrip("\n")
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line == "":
                    if "event" in frame:
                        return frame
                    frame = {}
                else:
                    key, _, value = line.partition(": ")
                    frame[key] = json.loads(value) if key == "data" else value


async def open_stream(y, user: str, *, last_event_id: str | None = None) -> Stream:
    headers = {"Authorization": f"Bearer {y.token(user)}", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    resp = await y.session.get(y.base + "/api/v1/results/stream", headers=headers,
                               timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    stream = Stream(resp)
    return stream


async def test_clinic_screen_receives_its_result_live_and_only_its_own(make_yilian, clinic_scp, monkeypatch):
    monkeypatch.setenv("YILIAN_SSE_HEARTBEAT_SECONDS", "0.2")
    clinic_scp.start()
    y = await make_yilian(scp_port=clinic_scp.port)
    cg = await open_stream(y, "cg-clinic")
    db = await open_stream(y, "db-clinic")

    study_uid = await y.send_study()
    report_id = (await y.sign(study_uid))["report_id"]
    first = await cg.next_event()
    assert first["event"] == "result.delivered"
    assert first["data"]["data"]["result_id"] == report_id and first["data"]["data"]["channel"] == "inbox"
    summary = first["data"]["data"]["summary"]
    assert summary["study_uid"] == study_uid and summary["reader_name"] == "王建国"
    seen = [first]
    while len(seen) < 3:  # the DICOM store, then its automatic acknowledgement
        seen.append(await cg.next_event())
    assert {(f["event"], f["data"]["data"].get("channel")) for f in seen} == {
        ("result.delivered", "inbox"), ("result.delivered", "dicom"), ("result.acknowledged", None)}
    ids = [int(f["id"]) for f in seen]
    assert ids == sorted(ids)
    assert "heartbeat" in cg.comments or (await _heartbeat(cg))

    # dongba's screen: its first event is its own result, never chengguan's
    db_study = await y.send_study(calling="DB_DR1")
    db_report = (await y.sign(db_study, clinic="db-clinic"))["report_id"]
    own = await db.next_event()
    assert own["data"]["data"]["result_id"] == db_report and own["data"]["data"]["organization"] == "dongba-thc"

    # every push of a result is a read, and audited for the user whose screen got it
    pushes = await y.rt.store.find("audit", {"action": "result.push", "actor": "cg-clinic"})
    assert {p["resource"] for p in pushes} == {f"result/{report_id}"} and len(pushes) >= 3

    # a reconnecting screen resumes after the last event it saw
    again = await open_stream(y, "cg-clinic", last_event_id=str(ids[0]))
    replayed = [await again.next_event(), await again.next_event()]
    assert [int(f["id"]) for f in replayed] == ids[1:]
    for s in (cg, db, again):
        s.resp.close()


async def _heartbeat(stream: Stream) -> bool:
    async def heard() -> bool:
        try:
            async with asyncio.timeout(0.5):
                await stream.next_event()
        except TimeoutError:
            pass
        return "heartbeat" in stream.comments
    await wait_for(heard, timeout=5, what="a heartbeat comment")
    return True


async def test_critical_escalation_is_pushed_again_to_the_clinic_screen(make_yilian, clinic_scp):
    clinic_scp.start()
    y = await make_yilian(scp_port=clinic_scp.port, critical_ack_seconds=0.5, critical_repeat_seconds=60)
    screen = await open_stream(y, "cg-clinic")
    study_uid = await y.send_study()
    report_id = (await y.sign(study_uid, critical=True, category="急性心肌梗死"))["report_id"]
    events = []
    while not any(e["event"] == "critical.unacknowledged" for e in events):
        events.append(await screen.next_event())
    pushed = events[-1]["data"]["data"]
    assert pushed["result_id"] == report_id and pushed["escalation"] == 1 and pushed["contact"]
    assert not any(e["event"] == "result.acknowledged" for e in events)
    screen.resp.close()


async def test_stream_refuses_bad_last_event_id_and_roles_without_an_inbox(make_yilian, clinic_scp):
    y = await make_yilian(scp_port=clinic_scp.port)
    status, problem = await y.call("GET", "/api/v1/results/stream", "dr-wang")
    assert status == 403
    async with y.session.get(y.base + "/api/v1/results/stream", headers={
            "Authorization": f"Bearer {y.token('cg-clinic')}", "Last-Event-ID": "abc"}) as resp:
        assert resp.status == 400 and "Last-Event-ID" in (await resp.json())["detail"]
