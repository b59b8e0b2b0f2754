"""``GET /api/v1/worklist/stream`` over real HTTP: a reader hears of his centre's changes at once,
never of another centre's, and no patient data; Last-Event-ID resumes; only readers and
coordinators may listen.  And ``/desk/reader`` is a reader's page only."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from ..api.conftest import api  # noqa: F401
from .support import session_cookie, set_password

CG_CT, DB_ECG = "1.2.826.0.1.100.1", "1.2.826.0.1.200.2"  # county-imaging's and county-ecg's work


async def events(resp: aiohttp.ClientResponse, n: int, timeout: float = 5.0) -> list[dict]:
    """The next ``n`` events of an open stream (comments skipped)."""
    got: list[dict] = []
    block: dict = {}
    deadline = time.monotonic() + timeout
    while len(got) < n:
        line = (await asyncio.wait_for(resp.content.readline(), deadline - time.monotonic())).decode().rstrip("\n")
        if not line:
            if "data" in block:
                got.append(block)
            block = {}
        elif not line.startswith(":") and ":" in line:
            key, _, value = line.partition(":")
            block[key] = json.loads(value.strip()) if key == "data" else value.strip()
    return got


async def test_a_reader_hears_his_centres_changes_and_nothing_else(api):  # noqa: F811
    headers = {"Authorization": f"Bearer {api.token('dr-wang')}"}
    async with api.session.get(api.base + "/api/v1/worklist/stream", headers=headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        assert (await resp.content.readline()).startswith(b"retry:")
        ecg = await api.create_request(DB_ECG, "db-clinic", kind="ecg")  # county-ecg's: not his
        t0 = time.monotonic()
        ct = await api.create_request(CG_CT, priority="urgent")
        (queued,) = await events(resp, 1)
        assert time.monotonic() - t0 < 1.0
        assert queued["event"] == "reading.queued" and queued["data"]["request_id"] == ct["id"]
        assert set(queued["data"]) == {"type", "time", "request_id", "state", "priority", "kind", "centre"}
        assert queued["data"]["centre"] == "county-imaging" and ecg["id"] not in json.dumps(queued)
        await api.ok("POST", f"/api/v1/reading-requests/{ct['id']}/claim", "dr-wang")
        (claimed,) = await events(resp, 1)
        assert claimed["event"] == "reading.claimed" and claimed["data"]["state"] == "claimed"
        assert int(claimed["id"]) > int(queued["id"])
    # resumed after a drop: what happened meanwhile comes first
    await api.ok("POST", f"/api/v1/reading-requests/{ct['id']}/release", "dr-wang")
    async with api.session.get(api.base + "/api/v1/worklist/stream",
                               headers={**headers, "Last-Event-ID": claimed["id"]}) as resp:
        (released,) = await events(resp, 1)
        assert released["event"] == "reading.released" and released["data"]["request_id"] == ct["id"]


async def test_only_readers_and_coordinators_listen(api):  # noqa: F811
    for user in ("cg-clinic", "auditor", "admin"):
        status, problem, _ = await api.call("GET", "/api/v1/worklist/stream", user=user)
        assert status == 403, (user, status, problem)
    status, problem, _ = await api.call("GET", "/api/v1/worklist/stream", user="dr-wang",
                                        headers={"Last-Event-ID": "abc"})
    assert status == 400 and "Last-Event-ID" in problem["detail"]


async def test_the_readers_page_is_for_readers(api):  # noqa: F811
    for user in ("dr-wang", "cg-clinic"):
        await set_password(api.rt, user)
    async with api.session.get(api.base + "/desk/reader", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/signin?next=/desk/reader"
    reader = await session_cookie(api.base, "dr-wang")
    async with api.session.get(api.base + "/desk/reader", headers=reader.headers(csrf=False),
                               allow_redirects=False) as resp:
        page = await resp.text()
        assert resp.status == 200 and 'src="/desk/static/reader.js"' in page and 'id="rd-viewer"' in page
        assert "Ctrl+Enter" in page and "script-src 'self'" in resp.headers["Content-Security-Policy"]
    clinic = await session_cookie(api.base, "cg-clinic")
    async with api.session.get(api.base + "/desk/reader", headers=clinic.headers(csrf=False),
                               allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/desk"
