"""Extra ingest processes: more cores for C-STORE, one listening port (SO_REUSEPORT).

A single Python process is bound to one core (the GIL).  With
``YILIAN_GATEWAY_WORKERS=N`` the main gateway starts ``N - 1`` spawned processes, each
with its own DICOM server, store connection and blob store, listening on the same port; the
kernel spreads incoming associations over all of them.  Workers only ingest (blob +
index + ``instance.stored`` in one transaction): the embedded bus in the main process
reads their events from the shared event log, and only the main process announces
``study.received``, so the one-study-one-announcement rule holds.

A worker follows consortium changes through the store's ``config/consortium`` document
(where the admin API keeps the current topology), so a newly registered or removed AE
title applies to every process within a few seconds.  A worker exits when told
(SIGTERM) or when its parent disappears.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
from typing import Any

from ..core import orphans
from ..core.settings import Settings

log = logging.getLogger("yilian.pacs_gateway.workers")

READY_TIMEOUT = 60.0
CONSORTIUM_POLL_SECONDS = 2.0


class WorkerPool:
    def __init__(self, settings: Settings, port: int, count: int, *, indexer_address: str | None = None) -> None:
        # Workers listen on the port the main process actually bound (it may have been 0).
        self.settings = dataclasses.replace(settings, dicom_port=port, gateway_workers=1)
        self.count = count
        self.indexer_address = indexer_address  # the main process's indexer process, if it has one
        self._ctx = multiprocessing.get_context("spawn")
        self.processes: list[Any] = []

    async def start(self) -> None:
        ready = []
        for index in range(self.count):
            event = self._ctx.Event()
            proc = self._ctx.Process(target=worker_main,
                                     args=(self.settings, index + 1, os.getpid(), event, self.indexer_address),
                                     name=f"yilian-gateway-worker-{index + 1}", daemon=True)
            with orphans.spared_from_interrupt():
                proc.start()
            self.processes.append(proc)
            ready.append(event)
        for proc, event in zip(self.processes, ready):
            ok = await asyncio.to_thread(event.wait, READY_TIMEOUT)
            if not ok:
                await self.stop()
                raise RuntimeError(f"gateway worker {proc.name} did not become ready "
                                   f"(exit code {proc.exitcode})")
        log.info("gateway workers ready", extra={"workers": self.count, "pids": [p.pid for p in self.processes]})

    async def stop(self) -> None:
        for proc in self.processes:
            if proc.is_alive():
                proc.terminate()
        for proc in self.processes:
            await asyncio.to_thread(proc.join, 15)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
        self.processes.clear()


def worker_main(settings: Settings, index: int, parent_pid: int, ready: Any,
                indexer_address: str | None = None) -> None:
    from ..core import logs
    logs.configure(settings.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when we stop
    asyncio.run(_serve(settings, index, parent_pid, ready, indexer_address))


async def _serve(settings: Settings, index: int, parent_pid: int, ready: Any, indexer_address: str | None) -> None:
    from ..core.runtime import build_runtime
    from .service import GatewayService

    rt = await build_runtime(settings)
    service = GatewayService(rt, role="worker", slot=index, indexer_address=indexer_address)
    stop = asyncio.Event()
    orphans.stop_on_sigterm(stop)
    orphans.stop_with_parent(parent_pid, stop, f"gateway worker {index}")
    try:
        await service.start()
        ready.set()
        log.info("gateway worker serving", extra={"worker": index, "pid": os.getpid(), "port": service.dicom_port})
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=CONSORTIUM_POLL_SECONDS)
            except TimeoutError:
                await follow_consortium(rt)
    finally:
        await service.stop()
        await rt.blobs.close()
        await rt.store.close()


async def follow_consortium(rt: Any) -> bool:
    """Adopt the consortium kept in the store if it changed; True when it did."""
    from ..core.consortium import ConfigError, parse_consortium
    try:
        doc = await rt.store.get("config", "consortium")
    except Exception as exc:  # the store is briefly unavailable: keep the topology we have
        log.warning("cannot read the consortium from the store", extra={"error": str(exc)})
        return False
    if doc is None or doc.get("digest") == rt.consortium.digest():
        return False
    try:
        rt.consortium = parse_consortium(json.dumps(doc["document"], ensure_ascii=False), source="store")
    except (ConfigError, KeyError) as exc:
        log.error("consortium in the store is invalid; keeping the current one", extra={"error": str(exc)})
        return False
    log.info("gateway worker adopted a new consortium", extra={"digest": doc.get("digest")})
    return True
