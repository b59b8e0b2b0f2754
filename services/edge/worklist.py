"""The edge's copy of its organisation's worklist, and the MPPS its modalities report while the link
is down (docs/edge.md).

**The copy.**  Every ``worklist_seconds`` (and as soon as the link is back, on the retry backoff) the
edge asks the centre for the orders changed since its last answer's cursor (the first time, or
when it holds none: every open order) and writes them into its local ``orders`` collection as the
centre keeps them, so the local gateway's Modality Worklist C-FIND answers from it unchanged.  An
order completed, discontinued or cancelled at the centre leaves the copy.  The copy is in the
edge's store: it survives restarts and outages, and its age (since the last good sync) is shown.

**MPPS.**  The local gateway keeps each MPPS a modality reports in ``performed_procedure_steps``.
Each step's latest status is forwarded to the centre once, oldest first, within a poll while the
link is up (``edge_steps`` remembers what the centre acknowledged; the centre takes a resend as a
no-op), and the local copy of the order leaves the worklist at once, as it would at the centre.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..core.backoff import Backoff
from ..core.events import utc_now
from ..core.runtime import Runtime
from ..core.times import parse_iso
from .link import CentreLink, LinkDown, LinkError, LinkRefused
from .settings import EdgeSettings

log = logging.getLogger("yilian.edge.worklist")

ORDERS = "orders"  # the local gateway's worklist reads this collection (services/pacs_gateway/worklist.py)
STEPS = "performed_procedure_steps"  # where the local gateway keeps each MPPS
EDGE_STEPS = "edge_steps"  # per MPPS: the status the centre acknowledged
STATE = "edge_state"  # "worklist": the cursor and the last sync; "steps": how far the MPPS were looked at
OPEN = ("scheduled", "in_progress")
STEP_STATES = {"IN PROGRESS": "in_progress", "COMPLETED": "completed", "DISCONTINUED": "discontinued"}
REPORT_FIELDS = ("calling_ae", "status", "modality", "accession_numbers", "scheduled_step_ids",
                 "requested_procedure_ids", "study_uids")


def _age(at: str | None) -> float | None:
    if not at:
        return None
    return round(time.time() - parse_iso(at), 1)


class WorklistCopy:
    def __init__(self, rt: Runtime, link: CentreLink, settings: EdgeSettings) -> None:
        self.rt, self.link, self.settings = rt, link, settings
        self.backoff = Backoff(settings.first_delay, settings.max_delay, float("inf"))
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edge:worklist")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        next_sync = 0.0
        while True:
            error = None
            try:
                # A local MPPS goes to the centre within a poll (the reading may be waiting on it);
                # the copy is synced every worklist_seconds.
                due = time.monotonic() >= next_sync
                await self.run_once(sync=due)
                if due:
                    next_sync = time.monotonic() + self.settings.worklist_seconds
                self.failures = 0
                wait = self.settings.poll_seconds
            except LinkError as exc:
                self.failures += 1
                error, next_sync = str(exc), 0.0  # once the link is back, sync at once
                wait = min(self.backoff.delay(self.failures), self.settings.worklist_seconds)
                log.warning("worklist sync failed; will retry: %s", exc, extra={"attempt": self.failures,
                                                                                 "retry_in": round(wait, 2)})
            except Exception as exc:
                self.failures += 1
                error, wait = f"{type(exc).__name__}: {exc}", self.settings.worklist_seconds
                log.exception("worklist sync failed")
            if error != self.last_error:
                self.last_error = error
                await self._save({"last_error": error})
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def run_once(self, *, sync: bool = True) -> None:
        """Forward the MPPS first (the centre then moves its orders), then bring the copy up to date."""
        await self.discover_steps()
        await self.forward_steps()
        if sync:
            await self.sync()

    # --- the copy ------------------------------------------------------------------------------
    async def sync(self) -> int:
        """One sync with the centre; the number of orders written or dropped."""
        state = await self.rt.store.get(STATE, "worklist") or {}
        since = state.get("cursor")
        items: list[dict[str, Any]] = []
        offset: int | None = 0
        cursor, complete = since, since is None
        while offset is not None:
            page = await self.link.worklist(since, offset)
            items += page["items"]
            cursor = max(filter(None, [cursor, page.get("cursor")]), default=None)
            complete = bool(page.get("complete"))
            offset = page.get("next_offset")
        changed = await self._apply(items, complete)
        await self._save({"cursor": cursor, "synced_at": utc_now(), "last_error": None})
        if changed:
            log.info("worklist copy updated", extra={"changed": changed, "complete": complete})
        return changed

    async def _apply(self, items: list[dict[str, Any]], complete: bool) -> int:
        changed = 0
        async with self.rt.store.transaction() as tx:
            for item in items:
                if item.get("organization") != self.settings.organization:
                    continue  # the centre scopes it; an edge never keeps another clinic's patients
                local = await tx.get(ORDERS, item["id"])
                if item["state"] not in OPEN:
                    changed += bool(await tx.delete(ORDERS, item["id"]))
                elif local is not None and local.get("performed_locally") and local.get("updated_at") == item["updated_at"]:
                    continue  # a local MPPS took it off the worklist; the centre has not moved it yet
                elif local is None or local.get("updated_at") != item["updated_at"]:
                    await tx.put(ORDERS, item)
                    changed += 1
            if complete:  # the whole copy: what the centre no longer has open goes
                keep = {i["id"] for i in items if i["state"] in OPEN}
                for doc in await tx.find(ORDERS, {}):
                    if doc["id"] not in keep:
                        changed += bool(await tx.delete(ORDERS, doc["id"]))
        return changed

    async def _save(self, changes: dict[str, Any]) -> None:
        async with self.rt.store.transaction() as tx:
            state = await tx.get(STATE, "worklist") or {"id": "worklist", "cursor": None, "synced_at": None}
            await tx.put(STATE, {**state, **changes})

    # --- MPPS ----------------------------------------------------------------------------------
    async def discover_steps(self) -> int:
        """Every MPPS changed locally since the last look gets its queue entry (pending); its order
        leaves the local worklist."""
        store = self.rt.store
        scan = await store.get(STATE, "steps") or {"id": "steps", "since": ""}
        changed = await store.find(STEPS, {"updated_at": {"$gte": scan["since"]}}, sort=[("updated_at", 1)],
                                   limit=500)
        found = 0
        async with store.transaction() as tx:
            for step in changed:
                entry = await tx.get(EDGE_STEPS, step["id"])
                if entry is not None and entry["status"] == step["status"]:
                    continue
                report = {"sop_instance_uid": step["id"], **{k: step.get(k) for k in REPORT_FIELDS}}
                await tx.put(EDGE_STEPS, {
                    "id": step["id"], "report": report, "status": step["status"], "pending": True,
                    "forwarded": (entry or {}).get("forwarded"), "queued_at": step["updated_at"],
                    "attempts": 0, "last_error": None, "version": (entry or {}).get("version", 0) + 1})
                await self._performed(tx, step)
                found += 1
            if changed:
                await tx.put(STATE, {"id": "steps", "since": changed[-1]["updated_at"]})
        return found

    async def _performed(self, tx: Any, step: dict[str, Any]) -> None:
        for field, values in (("scheduled_step_id", step.get("scheduled_step_ids")),
                              ("accession_number", step.get("accession_numbers"))):
            for value in values or []:
                for order in await tx.find(ORDERS, {field: value}, limit=1):
                    await tx.update(ORDERS, order["id"], {"on_worklist": False, "performed_locally": True,
                                                          "state": STEP_STATES[step["status"]]})
                    return

    async def forward_steps(self) -> int:
        """Each pending MPPS status to the centre, oldest first; stops at the first link failure."""
        store = self.rt.store
        sent = 0
        for entry in await store.find(EDGE_STEPS, {"pending": True}, sort=[("queued_at", 1)], limit=500):
            try:
                answer = await self.link.procedure_step(entry["report"])
            except LinkRefused as exc:  # the centre will refuse this step again: set aside, shown
                if exc.status in (401, 403):
                    raise  # the edge's token, not the step: retried once the centre takes it again
                log.warning("the centre refused an MPPS; set aside", extra={
                    "sop_instance_uid": entry["id"], "status": entry["status"], "error": str(exc)})
                await self._write_step(entry, {"pending": False, "refused": str(exc), "last_error": str(exc)})
                continue
            except LinkDown as exc:
                await self._write_step(entry, {"attempts": entry.get("attempts", 0) + 1, "last_error": str(exc)})
                raise
            await self._write_step(entry, {"pending": False, "forwarded": entry["status"], "last_error": None,
                                           "forwarded_at": utc_now(), "outcome": answer.get("outcome")})
            sent += 1
            log.info("MPPS forwarded", extra={"sop_instance_uid": entry["id"], "status": entry["status"]})
        return sent

    async def _write_step(self, entry: dict[str, Any], changes: dict[str, Any]) -> None:
        # Only if the step did not move on meanwhile (a newer status stays pending).
        async with self.rt.store.transaction() as tx:
            await tx.update(EDGE_STEPS, entry["id"], changes, where={"version": entry["version"]})

    # --- status --------------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        store = self.rt.store
        state = await store.get(STATE, "worklist") or {}
        return {
            "items": await store.count(ORDERS, {"on_worklist": True}),
            "orders": await store.count(ORDERS),
            "synced_at": state.get("synced_at"), "age_seconds": _age(state.get("synced_at")),
            "last_error": self.last_error if self._task is not None else state.get("last_error"),
            "steps_pending": await store.count(EDGE_STEPS, {"pending": True}),
            "steps_refused": await store.count(EDGE_STEPS, {"refused": {"$ne": None}}),
        }


def metrics(w: dict[str, Any]) -> list[str]:
    """The copy's status as Prometheus gauges (the edge's /metrics)."""
    age = w["age_seconds"] if w["age_seconds"] is not None else -1
    return [
        "# HELP yilian_edge_worklist_items Orders on the local worklist copy.",
        "# TYPE yilian_edge_worklist_items gauge", f"yilian_edge_worklist_items {w['items']}",
        "# HELP yilian_edge_worklist_age_seconds Seconds since the copy was last synced with the centre (-1: never).",
        "# TYPE yilian_edge_worklist_age_seconds gauge", f"yilian_edge_worklist_age_seconds {age}",
        "# HELP yilian_edge_worklist_sync_failing 1 while the last sync with the centre failed.",
        "# TYPE yilian_edge_worklist_sync_failing gauge", f"yilian_edge_worklist_sync_failing {int(bool(w['last_error']))}",
        "# HELP yilian_edge_procedure_steps_pending MPPS statuses not yet acknowledged by the centre.",
        "# TYPE yilian_edge_procedure_steps_pending gauge", f"yilian_edge_procedure_steps_pending {w['steps_pending']}",
    ]
