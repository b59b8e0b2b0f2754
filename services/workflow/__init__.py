"""The workflow service: reading requests from request to signed report.

Commands come from the API through :func:`.service.execute`; ``study.received`` events
(consumer group ``workflow``) apply site rules and queue waiting requests; a sweeper
returns expired leases to the queue, flags tasks at SLA risk and cancels requests that waited
too long for their study.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..core.events import Event
from ..core.runtime import Runtime
from . import ecg_triage, template_store
from .consultation import reminders as consultation_reminders
from .leases import WorkflowSettings, iso
from .context import SETTINGS_KEY, settings_of
from .orders import service as orders
from .referral import sweeps as referral_sweeps
from .service import expire_leases, expire_waiting, flag_sla_risks, on_study_received

log = logging.getLogger("yilian.workflow")

GROUP = "workflow"


class WorkflowService:
    name = "workflow"

    def __init__(self, rt: Runtime, settings: WorkflowSettings | None = None) -> None:
        self.rt = rt
        if settings is not None:
            rt.shared[SETTINGS_KEY] = settings
        self.settings = settings_of(rt)
        self._sweeper: asyncio.Task[None] | None = None
        rt.bus.subscribe(GROUP, ["study.received"], self._on_study_received)
        # MPPS from the modalities moves exam requests (orders) and creates their reading requests
        rt.bus.subscribe(orders.GROUP, ["procedure_step.reported"], self._on_procedure_step)
        ecg_triage.subscribe(rt)  # ECG measurements far outside normal raise the priority

    async def _on_study_received(self, event: Event) -> None:
        await on_study_received(self.rt, event)

    async def _on_procedure_step(self, event: Event) -> None:
        await orders.on_procedure_step(self.rt, event)

    async def start(self) -> None:
        # The consortium's report templates (deploy/report-templates): a changed file is a new version.
        await template_store.load_shipped(self.rt.store, at=iso(self.settings.now()))
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="workflow:sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def sweep(self) -> tuple[int, int]:
        """One pass: (leases expired, tasks newly flagged at SLA risk)."""
        return await expire_leases(self.rt), await flag_sla_risks(self.rt)

    async def sweep_waiting(self) -> int:
        """One pass: requests cancelled after waiting too long for their study."""
        return await expire_waiting(self.rt)

    async def sweep_consultations(self) -> tuple[int, int]:
        """One pass of the consultation timers: (reminders sent, no-shows flagged)."""
        return await consultation_reminders.sweep(self.rt)

    async def sweep_referrals(self) -> tuple[int, int, int]:
        """One pass of the referral timers: (escalated, reserved slots released, no-shows)."""
        return await referral_sweeps.sweep(self.rt)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                expired, at_risk = await self.sweep()
                if expired or at_risk:
                    log.info("workflow sweep", extra={"leases_expired": expired, "sla_at_risk": at_risk})
                if waited := await self.sweep_waiting():
                    log.info("waiting requests cancelled", extra={"cancelled": waited})
                reminded, no_shows = await self.sweep_consultations()
                if reminded or no_shows:
                    log.info("consultation sweep", extra={"reminders": reminded, "no_shows": no_shows})
                escalated, released, missed = await self.sweep_referrals()
                if escalated or released or missed:
                    log.info("referral sweep", extra={"escalated": escalated, "slots_released": released,
                                                      "no_shows": missed})
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the store may come back; try again next time
                log.exception("workflow sweep failed")
            await asyncio.sleep(self.settings.sweep_interval)


def build(rt: Runtime) -> WorkflowService:
    return WorkflowService(rt)
