"""Results back to the clinic's terminal: the edge follows its clinic's result stream at the centre,
fetches each result's SR and Encapsulated PDF, C-STOREs them to the terminal on the clinic's LAN
(which the centre cannot reach) and tells the centre they are there (docs/edge.md).

Durable at each step, in the edge's store: the stream's last event id (``edge_state``), and one
document per result (``edge_results``) that moves

``fetch``  known from the stream; its objects are not here yet;
``store``  its objects are on disk here (``YILIAN_DATA_DIR/edge-results``), not all at the terminal;
``ack``    the terminal answered Success for each (recorded as each came); the centre not yet told;
``done``   the centre was told (or had nothing for the terminal: ``none``); ``refused`` the terminal
           refuses it for good (the centre dead-letters it at its horizon).

Exactly once at the terminal: an instance's Success is written before the next instance goes and
before the centre is told, so a restart sends only what the terminal never acknowledged.  The one
window left is a ``kill -9`` between the terminal's Success and that write (milliseconds): that
instance goes again, with the same SOP Instance UID (the same object to the terminal's archive).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from pydicom import dcmread

from ..core import cstore
from ..core.backoff import Backoff
from ..core.consortium import Consortium, Endpoint
from ..core.events import utc_now
from ..core.fsync import fsync_path
from ..core.runtime import Runtime
from ..core.times import iso
from .link import CentreLink, LinkDown, LinkError, LinkRefused
from .settings import EdgeSettings

log = logging.getLogger("yilian.edge")

RESULTS = "edge_results"
STATE, STREAM = "edge_state", "results_stream"
WORKING = ("fetch", "store", "ack")
IDLE_SECONDS = 45.0  # three of the centre's 15 s heartbeats missed: the link is gone, reconnect

Doc = dict[str, Any]




# --- I/O-free pieces ----------------------------------------------------------------------------

def terminal_of(consortium: Consortium, settings: EdgeSettings) -> Endpoint | None:
    """The clinic's terminal: ``YILIAN_EDGE_TERMINAL`` (AE@host:port), else its organisation's scp."""
    if settings.terminal:
        ae, _, address = settings.terminal.partition("@")
        host, _, port = address.rpartition(":")
        if not ae or not host or not port.isdigit() or not 0 < int(port) < 65536 or len(ae) > 16:
            raise SystemExit(f"YILIAN_EDGE_TERMINAL must be AE@host:port, got {settings.terminal!r}")
        return Endpoint(ae, host, int(port))
    org = consortium.organizations.get(settings.organization)
    return org.scp if org is not None else None


def wanted(event: str, data: Doc, organization: str) -> bool:
    """A new result of the clinic (its inbox delivery, the first event of every result) that may have
    DICOM objects for the terminal; a re-scan notice has none."""
    return (event == "result.delivered" and data.get("channel") == "inbox"
            and data.get("organization") == organization and data.get("source") != "returned")


def parts(body: bytes) -> list[bytes]:
    """The parts of a ``multipart/related`` body (the centre writes no preamble)."""
    delimiter = body.split(b"\r\n", 1)[0]
    if not delimiter.startswith(b"--"):
        raise ValueError("not a multipart body")
    out = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.partition(b"\r\n\r\n")
        out.append(content.removesuffix(b"\r\n"))
    return out


def target_name(terminal: Endpoint) -> str:
    return f"{terminal.ae_title}@{terminal.host}:{terminal.port}"


# --- the follower ---------------------------------------------------------------------------------

class ResultFollower:
    def __init__(self, rt: Runtime, link: CentreLink, settings: EdgeSettings) -> None:
        self.rt, self.link, self.settings = rt, link, settings
        self.terminal = terminal_of(rt.consortium, settings)
        self.dir = Path(rt.settings.data_dir) / "edge-results"
        self.backoff = Backoff(min(settings.first_delay, settings.results_max_delay), settings.results_max_delay,
                               float("inf"))
        self.connected = False
        self.last_error: str | None = None
        self.last_delivered_at: str | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.terminal is None:
            log.warning("no terminal for results: the organisation has no scp and YILIAN_EDGE_TERMINAL is unset; "
                        "results are not followed", extra={"organization": self.settings.organization})
            return
        self._tasks = [asyncio.create_task(self._follow(), name="edge:results-stream"),
                       asyncio.create_task(self._deliver(), name="edge:results")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _write(self, method: str, *args: Any, **kw: Any) -> Any:
        async with self.rt.store.transaction() as tx:
            return await getattr(tx, method)(*args, **kw)

    # --- the stream: what is new, from the last event seen ------------------------------------

    async def _follow(self) -> None:
        failures = 0
        while True:
            try:
                async for event_id, event, data in self._events():
                    await self._seen(event_id, event, data)
            except (LinkError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                self.last_error = f"result stream: {exc}"
                log.info("result stream interrupted; reconnecting", extra={"error": str(exc)})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("result stream failed; reconnecting")
            failures = 1 if self.connected else failures + 1  # a stream that was up starts the backoff afresh
            self.connected = False
            await asyncio.sleep(self.backoff.delay(failures))

    async def _events(self) -> AsyncIterator[tuple[str, str, Doc]]:
        state = await self.rt.store.get(STATE, STREAM)
        # First start: from the log's beginning, so a result signed before the edge was installed comes too
        # (the centre answers 409 for one already delivered).
        last = state["last_event_id"] if state else "0"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=IDLE_SECONDS)
        async with self.link.session.get(self.link.base + "/api/v1/results/stream", timeout=timeout,
                                         headers={"Accept": "text/event-stream", "Last-Event-ID": last}) as resp:
            if resp.status != 200:
                detail = (await resp.read())[:300].decode("utf-8", "replace")
                if resp.status >= 500 or resp.status in (408, 429):
                    raise LinkDown(f"result stream: HTTP {resp.status}: {detail}")
                raise LinkRefused(resp.status, f"result stream: {detail}")
            self.connected = True
            log.info("following the result stream", extra={"last_event_id": last})
            frame: dict[str, str] = {}
            async for raw in resp.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith(":"):
                    continue
                if line:
                    key, _, value = line.partition(":")
                    frame[key] = value.removeprefix(" ")
                    continue
                if "id" in frame and "event" in frame and "data" in frame:
                    yield frame["id"], frame["event"], json.loads(frame["data"]).get("data") or {}
                frame = {}
        raise LinkDown("result stream closed by the centre")

    async def _seen(self, event_id: str, event: str, data: Doc) -> None:
        """The event's result queued (if it is one for the terminal) and the stream's position, together."""
        async with self.rt.store.transaction() as tx:
            if wanted(event, data, self.settings.organization) and await tx.get(RESULTS, data["result_id"]) is None:
                await tx.insert(RESULTS, {"id": data["result_id"], "state": "fetch", "event_id": event_id,
                                          "critical": bool(data.get("critical")), "study_uid": data.get("study_uid"),
                                          "queued_at": utc_now(), "next_attempt_at": utc_now(), "attempts": 0,
                                          "objects": [], "stored": [], "last_error": None, "delivered_at": None})
                self._wake.set()
            await tx.put(STATE, {"id": STREAM, "last_event_id": event_id})

    # --- the queue: fetch, store at the terminal, acknowledge -------------------------------------

    async def _deliver(self) -> None:
        while True:
            try:
                due = await self.rt.store.find(RESULTS, {"state": {"$in": list(WORKING)},
                                                         "next_attempt_at": {"$lte": utc_now()}},
                                               sort=[("next_attempt_at", 1)], limit=1)
                if due:
                    await self.work(due[0])
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("result delivery pass failed; will retry")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)

    async def work(self, entry: Doc) -> None:
        rid = entry["id"]
        try:
            if entry["state"] == "fetch":
                entry = await self._fetch(entry)
            if entry["state"] == "store":
                entry = await self._store(entry)
            if entry["state"] == "ack":
                await self._acknowledge(entry)
        except (LinkDown, LinkRefused, OSError) as exc:
            await self._failed(entry, str(exc))
        except _TerminalFailed as exc:
            if exc.permanent:
                self.last_error = f"{rid}: {exc}"
                await self._write("update", RESULTS, rid, {"state": "refused", "last_error": str(exc),
                                                           "next_attempt_at": None})
                log.error("the terminal refuses the result for good", extra={"result_id": rid, "error": str(exc)})
            else:
                await self._failed(entry, str(exc))

    async def _failed(self, entry: Doc, error: str) -> None:
        attempts = entry.get("attempts", 0) + 1
        wait = self.backoff.delay(attempts)
        self.last_error = f"{entry['id']}: {error}"
        await self._write("update", RESULTS, entry["id"], {"attempts": attempts, "last_error": error,
                                                           "next_attempt_at": iso(time.time() + wait)})
        log.warning("result not yet at the terminal; will retry: %s", error,
                    extra={"result_id": entry["id"], "state": entry["state"], "attempt": attempts,
                           "retry_in": round(wait, 2)})

    async def _fetch(self, entry: Doc) -> Doc:
        rid = entry["id"]
        status, body = await self.link.result_objects(rid)
        if status in (404, 409):  # nothing for the terminal (no via_edge delivery), or already delivered
            detail = "nothing for the terminal" if status == 404 else "already stored at the terminal"
            await self._write("update", RESULTS, rid, {"state": "done" if status == 409 else "none",
                                                       "last_error": None, "note": detail, "next_attempt_at": None})
            log.info("result not for the terminal", extra={"result_id": rid, "reason": detail})
            return {**entry, "state": "done"}
        folder = self.dir / rid
        objects = await asyncio.to_thread(_keep, folder, parts(body))
        changes = {"state": "store", "objects": objects, "attempts": 0, "last_error": None}
        await self._write("update", RESULTS, rid, changes)
        return {**entry, **changes}

    async def _store(self, entry: Doc) -> Doc:
        assert self.terminal is not None
        rid, loop = entry["id"], asyncio.get_running_loop()
        stored = list(entry.get("stored") or [])

        def accepted(sop_instance_uid: str) -> None:
            # From the C-STORE thread: durable before the next instance goes and before the centre is told.
            stored.append(sop_instance_uid)
            asyncio.run_coroutine_threadsafe(
                self._write("update", RESULTS, rid, {"stored": sorted(set(stored))}), loop).result()

        if not all(Path(o["path"]).is_file() for o in entry["objects"]):  # the copy was lost: fetch it again
            log.warning("the result's objects are gone from disk; fetching them again", extra={"result_id": rid})
            await self._write("update", RESULTS, rid, {"state": "fetch", "objects": []})
            return {**entry, "state": "fetch"}
        datasets = [dcmread(o["path"]) for o in entry["objects"]]
        t = self.terminal
        outcome = await asyncio.to_thread(
            cstore.store, datasets, calling_ae=self.rt.settings.ae_title, called_ae=t.ae_title, host=t.host,
            port=t.port, timeout=self.settings.terminal_timeout, already_sent=stored, stored=accepted)
        if not outcome.ok:
            raise _TerminalFailed(outcome.detail, permanent=outcome.permanent)
        changes = {"state": "ack", "attempts": 0, "last_error": None, "terminal": target_name(t),
                   "stored_at": utc_now()}
        await self._write("update", RESULTS, rid, changes)
        log.info("result stored at the terminal", extra={"result_id": rid, "terminal": target_name(t)})
        return {**entry, **changes, "stored": sorted(set(stored))}

    async def _acknowledge(self, entry: Doc) -> None:
        rid = entry["id"]
        await self.link.result_delivered(rid, entry.get("terminal") or target_name(self.terminal),  # type: ignore[arg-type]
                                         [o["sop_instance_uid"] for o in entry["objects"]])
        # The terminal has them now; removed before ``done`` so a crash leaves no orphan (``ack`` needs only the UIDs).
        await asyncio.to_thread(shutil.rmtree, self.dir / rid, True)
        self.last_delivered_at = utc_now()
        await self._write("update", RESULTS, rid, {"state": "done", "delivered_at": self.last_delivered_at,
                                                   "attempts": 0, "last_error": None, "next_attempt_at": None})
        log.info("result delivered at the terminal and acknowledged", extra={"result_id": rid})

    def wake(self) -> None:
        self._wake.set()

    async def status(self) -> Doc:
        store = self.rt.store
        pending = await store.find(RESULTS, {"state": {"$in": list(WORKING)}}, sort=[("queued_at", 1)], limit=200)
        return {"terminal": target_name(self.terminal) if self.terminal else None,
                "results_stream_connected": self.connected,
                "results_pending": len(pending),
                "results_delivered": await store.count(RESULTS, {"state": "done"}),
                "results_refused": await store.count(RESULTS, {"state": "refused"}),
                "results_last_delivered_at": self.last_delivered_at,
                "results_last_error": self.last_error,
                "results": [{k: p.get(k) for k in ("id", "state", "critical", "attempts", "stored", "last_error",
                                                   "next_attempt_at", "queued_at")} for p in pending]}


class _TerminalFailed(Exception):
    def __init__(self, detail: str, *, permanent: bool) -> None:
        super().__init__(detail)
        self.permanent = permanent


def _keep(folder: Path, files: list[bytes]) -> list[Doc]:
    """The fetched objects on disk (written, synced, renamed), until the terminal has them."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for data in files:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        out.append({"sop_instance_uid": str(ds.SOPInstanceUID), "sop_class_uid": str(ds.SOPClassUID),
                    "path": str(path), "size": len(data)})
    fsync_path(folder)
    return out

