"""The delivery service as ``yilian up`` runs it (:class:`DeliveryService`, :func:`build`); see the
package's docstring."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..core.events import Event
from ..core.runtime import Runtime
from . import secrets
from .critical import escalate_overdue
from .service import (GROUP, SETTINGS_KEY, WAKE_KEY, Worker, on_consultation_concluded, on_reading_returned,
                      on_report_signed, settings_of)
from .settings import DeliverySettings

log = logging.getLogger("yilian.delivery")


class DeliveryService:
    name = "delivery"

    def __init__(self, rt: Runtime, settings: DeliverySettings | None = None) -> None:
        self.rt = rt
        if settings is not None:
            rt.shared[SETTINGS_KEY] = settings
        self.settings = settings_of(rt)
        self.settings.check()
        self._wake = rt.shared[WAKE_KEY] = asyncio.Event()
        self.worker = Worker(rt)
        self._loop: asyncio.Task[None] | None = None
        self._prepare: asyncio.Task[None] | None = None
        types = ["report.signed", "reading.returned"]
        if "consultation.concluded" in rt.schemas.types:
            types.append("consultation.concluded")
        secrets.check(rt.consortium, rt.settings)
        rt.bus.subscribe(GROUP, types, self._on_event)

    async def _on_event(self, event: Event) -> None:
        if event.type == "consultation.concluded":
            await on_consultation_concluded(self.rt, event)
        elif event.type == "reading.returned":
            await on_reading_returned(self.rt, event)
        else:
            await on_report_signed(self.rt, event)

    async def start(self) -> None:
        self.worker.fonts.prepare()
        self._prepare = asyncio.create_task(self.worker.prepare_signer(), name="delivery:signer")
        self._loop = asyncio.create_task(self._work_forever(), name="delivery:worker")

    async def stop(self) -> None:
        if self._prepare is not None:
            self._prepare.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prepare
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        await self.worker.close()

    async def _work_forever(self) -> None:
        while True:
            try:
                self._wake.clear()
                await self.worker.run_once()
                await escalate_overdue(self.rt)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the store may come back; try again next time
                log.exception("delivery loop failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)


def build(rt: Runtime) -> DeliveryService:
    return DeliveryService(rt)
