"""The forward queue: every local study to the centre, instance by instance, through outages.

Durable because its state is the local store: the instances are in the local index (the gateway
answered the modality only once they were), and ``edge_studies`` says how far each study got.
After a crash or an outage nothing is re-sent that the centre already holds: each attempt first
asks the centre (QIDO-RS) which instances of the study it has.  An instance in a STOW request
cut mid-way may reach the centre twice; the centre keeps one (an identical duplicate is a no-op)
and announces the study once, when the edge says it is complete.
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
from ..core.times import iso
from . import outbox
from .link import CentreLink, LinkDown, LinkRefused, Outgoing
from .outbox import EDGE_STUDIES
from .settings import EdgeSettings

log = logging.getLogger("yilian.edge")

STATE = "edge_state"  # one document, "scan": how far the local studies were looked at


class Forwarder:
    def __init__(self, rt: Runtime, link: CentreLink, settings: EdgeSettings) -> None:
        self.rt, self.link, self.settings = rt, link, settings
        self.backoff = Backoff(settings.first_delay, settings.max_delay, float("inf"))
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rate = 0.0  # bytes per second on the wire, over the last request
        self.last_success_at: str | None = None
        self.last_error: str | None = None
        self._restored = False
        link.on_restored(self._link_restored)

    def _link_restored(self) -> None:
        # Studies waiting out their backoff go now: the link is back, not in a minute.
        self._restored = True
        self.wake()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edge:forward")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.run_once()
            except Exception:
                log.exception("edge forwarder pass failed; will retry")
                busy = False
            if not busy:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)

    async def run_once(self) -> bool:
        """Look for new local studies, then work on the most urgent due one; whether any was due."""
        await self.discover()
        if self._restored:
            self._restored = False
            await self.retry_now()
        due = await self.rt.store.find(EDGE_STUDIES, {"state": "pending", "next_attempt_at": {"$lte": utc_now()}},
                                       sort=[("rank", 1), ("first_received_at", 1)], limit=1)
        if not due:
            return False
        await self.forward(due[0])
        return True

    async def retry_now(self) -> int:
        """Every pending study waiting out a backoff is due at once; how many."""
        now = utc_now()
        waiting = await self.rt.store.find(EDGE_STUDIES, {"state": "pending", "next_attempt_at": {"$gt": now}})
        for entry in waiting:
            await self._write("update", EDGE_STUDIES, entry["id"], {"next_attempt_at": now},
                              where={"state": "pending"})
        return len(waiting)

    async def discover(self) -> int:
        """Every local study changed since the last look gets (or re-opens) its queue entry."""
        store = self.rt.store
        scan = await store.get(STATE, "scan") or {"id": "scan", "since": ""}
        changed = await store.find("studies", {"last_update_at": {"$gte": scan["since"]}},
                                   sort=[("last_update_at", 1)], limit=500)
        found = 0
        for study in changed:
            if study.get("organization") != self.settings.organization:
                continue  # never forwarded as ours (the local node only takes this clinic's AEs anyway)
            entry = await store.get(EDGE_STUDIES, study["id"])
            if entry is None:
                order = await self._order_of(study)
                await self._write("insert", EDGE_STUDIES, outbox.new_entry(study, rank_=outbox.rank(order), now=utc_now()))
                found += 1
            elif outbox.reopened(entry, study):
                await self._write("update", EDGE_STUDIES, study["id"], {
                    "state": "pending", "seen_update": study.get("last_update_at"), "next_attempt_at": utc_now(),
                    "instances": study.get("instance_count", 0), "version": entry["version"] + 1},
                    where={"version": entry["version"]})
                found += 1
        if changed:
            await self._write("put", STATE, {"id": "scan", "since": changed[-1]["last_update_at"]})
        return found

    async def _order_of(self, study: dict[str, Any]) -> dict[str, Any] | None:
        """The study's order in the worklist copy: its Accession Number, or the Study Instance UID the
        worklist gave (a modality may not copy the Accession Number)."""
        where: list[dict[str, Any]] = [{"study_instance_uid": study["id"]}]
        if study.get("accession_number"):
            where.append({"accession_number": study["accession_number"]})
        found = await self.rt.store.find("orders", {"$or": where}, limit=1)
        return found[0] if found else None

    async def _write(self, method: str, *args, **kw):
        async with self.rt.store.transaction() as tx:
            return await getattr(tx, method)(*args, **kw)

    async def forward(self, entry: dict[str, Any]) -> None:
        uid = entry["id"]
        store = self.rt.store
        study = await store.get("studies", uid)
        local = await store.find("instances", {"study_uid": uid})
        try:
            # What the centre acknowledged to a STOW counts as held even before its index shows it.
            stored = set(entry.get("stored", []))
            held = await self.link.held_instances(uid) | stored
            todo = outbox.missing(local, held, entry.get("refused", []))
            refused = list(entry.get("refused", []))
            reasons = dict(entry.get("refused_reasons") or {})  # SOP Instance UID -> "0xA900": the page shows why
            for batch in outbox.batches(todo, self.settings.batch_bytes):
                started = time.monotonic()
                result = await self.link.stow(uid, [self._outgoing(d) for d in batch])
                elapsed = max(time.monotonic() - started, 1e-6)
                self.rate = result.wire_bytes / elapsed
                held |= result.stored
                stored |= result.stored
                for sop, reason in result.failed.items():
                    if outbox.permanent(reason):
                        refused.append(sop)
                        reasons[sop] = f"0x{reason:04X}"
                        log.warning("the centre refused an instance for good; set aside",
                                    extra={"study_uid": uid, "sop_instance_uid": sop, "status": f"0x{reason:04X}"})
                self.last_success_at, self.last_error = utc_now(), None  # the centre answered: no stale error shown
                entry = {**entry, "bytes": entry.get("bytes", 0) + sum(d["size"] for d in batch),
                         "wire_bytes": entry.get("wire_bytes", 0) + result.wire_bytes}
                await self._write("update", EDGE_STUDIES, uid, {
                    "sent": len(stored), "stored": sorted(stored), "refused": refused, "refused_reasons": reasons,
                    "bytes": entry["bytes"],
                    "wire_bytes": entry["wire_bytes"], "last_success_at": self.last_success_at,
                    "attempts": 0, "last_error": None})
                if any(not outbox.permanent(r) for r in result.failed.values()):
                    raise LinkDown(f"the centre could not store {len(result.failed)} instance(s) now")
            outstanding = outbox.missing(local, held, refused)
            if outstanding:
                raise LinkDown(f"{len(outstanding)} instance(s) not yet held by the centre")
            if study is None or study.get("state") != "received" or study.get("last_update_at") != entry.get("seen_update"):
                # Still receiving locally: the centre is told only when the local study is complete.
                await self._write("update", EDGE_STUDIES, uid, {"next_attempt_at": iso(time.time() + self.settings.poll_seconds)})
                return
            if len(local) > len(refused):
                await self.link.complete(uid, len(local) - len(refused))
            else:  # the centre refused every instance: nothing there to announce; done here, its refusals shown
                log.warning("the centre refused every instance of the study; nothing to announce",
                            extra={"study_uid": uid, "instances": len(local)})
            done = await self._write("update", EDGE_STUDIES, uid, {"state": "done", "completed_at": utc_now(), "attempts": 0,
                                                           "last_error": None, "next_attempt_at": None},
                                      where={"seen_update": entry.get("seen_update")})
            if done:
                log.info("study forwarded and announced complete", extra={"study_uid": uid, "instances": len(local)})
        except (LinkDown, LinkRefused) as exc:
            attempts = entry.get("attempts", 0) + 1
            self.last_error = str(exc)
            wait = self.backoff.delay(attempts)
            await self._write("update", EDGE_STUDIES, uid, {"attempts": attempts, "last_error": str(exc),
                                                   "next_attempt_at": iso(time.time() + wait)})
            log.warning("forwarding failed; will retry: %s", exc, extra={"study_uid": uid, "attempt": attempts,
                                                               "error": str(exc), "retry_in": round(wait, 2)})

    def _outgoing(self, doc: dict[str, Any]) -> Outgoing:
        key = doc["blob_key"]
        return Outgoing(doc["id"], doc.get("size", 0), lambda: self.rt.blobs.read_chunks(key))

    async def status(self) -> dict[str, Any]:
        store = self.rt.store
        pending = await store.find(EDGE_STUDIES, {"state": "pending"}, sort=[("rank", 1), ("first_received_at", 1)],
                                   limit=200)
        instances = sum(max(p.get("instances", 0) - p.get("sent", 0) - len(p.get("refused", [])), 0) for p in pending)
        bytes_pending = 0
        for p in pending[:50]:
            local = await store.find("instances", {"study_uid": p["id"]})
            bytes_pending += max(sum(d.get("size", 0) for d in local) - p.get("bytes", 0), 0)
        return {"organization": self.settings.organization, "backlog_studies": len(pending),
                "backlog_instances": instances, "bytes_pending": bytes_pending, "rate_bytes_per_second": round(self.rate),
                "last_success_at": self.last_success_at, "last_error": self.last_error,
                "studies": [{k: p.get(k) for k in ("id", "rank", "instances", "sent", "refused", "refused_reasons", "attempts",
                                                  "last_error", "next_attempt_at", "first_received_at")}
                            for p in pending]}
