"""``study.received``: announce a study once it has been quiet for the configured period.

Runs as one task in the gateway's main process only (never in extra workers), so there
is one announcer per deployment.  Each announcement is a compare-and-set on
(``state``, ``last_update_at``) in the same transaction as the event: an instance that
arrives meanwhile wins, the study stays ``receiving`` and is announced later with all
of its content.  A late instance re-opens a ``received`` study; the next announcement
carries the next ``revision``.  Identical duplicates do not touch the study, so the same
content is never announced twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from ..core import held_studies
from ..core.events import Event
from ..core.runtime import Runtime
from ..core.store.port import StoreError
from . import model
from .ingest import SOURCE

log = logging.getLogger("yilian.pacs_gateway.announce")


def _iso(moment: datetime) -> str:
    # Same shape as core.events.utc_now, so ISO strings compare in time order.
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StudyAnnouncer:
    def __init__(self, rt: Runtime, *, batch: int = 200) -> None:
        self.rt = rt
        self.quiet = rt.settings.study_quiet_seconds
        self.batch = batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pacs_gateway:study.received")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        interval = min(max(self.quiet / 4, 0.05), 1.0)
        while True:
            try:
                await self.announce_quiet()
            except StoreError as exc:
                log.warning("study announcer: store unavailable, will retry", extra={"error": str(exc)})
            except Exception:
                log.exception("study announcer failed; will retry")
            await asyncio.sleep(interval)

    async def announce_quiet(self, now: datetime | None = None) -> int:
        """Announce every study quiet for the period; returns how many were announced."""
        cutoff = _iso((now or datetime.now(UTC)) - timedelta(seconds=self.quiet))
        due = await self.rt.store.find("studies", {"state": "receiving", "last_update_at": {"$lt": cutoff}},
                                       sort=[("last_update_at", 1)], limit=self.batch)
        announced = 0
        for study in due:
            if await held_studies.is_held(self.rt.store, study):
                continue  # coming through an edge: announced when the edge says it is complete
            if await self._announce(study["id"], study["last_update_at"]):
                announced += 1
        return announced

    async def _announce(self, study_uid: str, seen_update: str) -> bool:
        async with self.rt.store.transaction() as tx:
            study = await tx.get("studies", study_uid)
            if study is None or study.get("state") != "receiving" or study.get("last_update_at") != seen_update:
                return False  # an instance arrived since: announce later, with it
            revision = study.get("revision", 0) + 1
            changed = await tx.update("studies", study_uid, {"state": "received", "revision": revision},
                                      where={"state": "receiving", "last_update_at": seen_update})
            if not changed:
                return False
            study = {**study, "state": "received", "revision": revision}
            tx.emit(Event("study.received", subject=study_uid, source=SOURCE,
                          data=model.received_event_data(study)))
        log.info("study received", extra={"study_uid": study_uid, "revision": revision,
                                          "instance_count": study["instance_count"]})
        return True
