"""The pacs_gateway service: the DICOM node's lifecycle and the hook other DIMSE services use.

``start()`` binds the DICOM port (``YILIAN_AE_TITLE`` on ``YILIAN_BIND_HOST:YILIAN_DICOM_PORT``):
the asyncio upper layer in ``ul/`` serves C-ECHO/C-STORE associations and hands every other
one to the pynetdicom AE (``YILIAN_DICOM_NATIVE_UL=false``: pynetdicom serves them all); it
starts ``YILIAN_GATEWAY_WORKERS - 1`` extra ingest processes on the same port, the
``study.received`` announcer and a sweep of blobs a crash left unreferenced.

The hook for C-FIND / C-GET / C-MOVE / storage commitment / Modality Worklist and MPPS: each of
the modules ``query``, ``retrieve``, ``commitment`` and ``worklist`` in this package, when present, defines
``install(gateway) -> list[(evt.EVT_..., handler)]``; it may add presentation contexts to
``gateway.ae`` and use ``gateway.rt``, ``gateway.loop``, ``gateway.call(coro)`` and
``gateway.organization_for(calling_ae)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..core.consortium import Organization
from ..core.runtime import Runtime
from . import statuses
from .announce import StudyAnnouncer
from .ingest import Ingest, sweep_orphans
from .journal import Journal
from .model import StoreRefused
from .refusals import Refusals
from .scp import (CALLING_AE_NOT_REGISTERED, GatewayAE, HandOffServer, ReusePortServer, StorageSCP, build_ae,
                  receive_into, server_ssl_context)
from .ul import NativeServer

log = logging.getLogger("yilian.pacs_gateway")

T = TypeVar("T")
PLUGINS = ("query", "retrieve", "commitment", "worklist", "metrics")


def journal_for(rt: Runtime, slot: int) -> Journal:
    return Journal(rt.settings.data_dir / "journal" / f"gateway-{slot}",
                   segment_bytes=rt.settings.gateway_journal_segment_bytes)


def journal_slots(rt: Runtime) -> list[int]:
    """Every gateway process's journal left on disk (including workers no longer configured)."""
    root = rt.settings.data_dir / "journal"
    if not root.is_dir():
        return []
    return sorted(int(p.name.removeprefix("gateway-")) for p in root.glob("gateway-*")
                  if p.name.removeprefix("gateway-").isdigit())


class GatewayService:
    name = "pacs_gateway"

    def __init__(self, rt: Runtime, *, role: str = "main", slot: int = 0, indexer_address: str | None = None) -> None:
        if role not in ("main", "worker"):
            raise ValueError(f"bad gateway role {role!r}")
        self.rt = rt
        self.role = role
        self.slot = slot  # which journal this process writes: 0 the main process, 1.. its workers
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ae: GatewayAE | None = None
        self.dicom_port: int | None = None
        self.ready = False
        self.ingest = Ingest(rt, journal_for(rt, slot))
        self.refusals = Refusals(rt.store)  # what was turned away, for the sender's clinic
        self.announcer = StudyAnnouncer(rt) if role == "main" else None
        self.workers: Any = None  # workers.WorkerPool in the main process when gateway_workers > 1
        self.index_process: Any = None  # index_process.IndexProcess in the main process with gateway_indexer=process
        self.indexer_address = indexer_address  # a worker's: where the main process's indexer process listens
        self._server: ReusePortServer | HandOffServer | None = None
        self._native: NativeServer | None = None
        self._sweep: asyncio.Task[int] | None = None

    # --- the hook -------------------------------------------------------------------
    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the service's event loop from a pynetdicom thread; return its result."""
        assert self.loop is not None, "gateway not started"
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def organization_for(self, calling_ae: str) -> Organization | None:
        return self.rt.consortium.organization_of_ae(calling_ae)

    def sender(self, calling_ae: str) -> Organization:
        """The organisation a C-STORE from ``calling_ae`` is stored for; :class:`StoreRefused` when
        the AE may not store: no longer registered, or a reading workstation (workstations query
        and retrieve; what a reader produces comes back through Yilian's reports, and a
        workstation's send must never add to, or start, a clinic's study)."""
        org = self.organization_for(calling_ae)
        if org is None:
            raise StoreRefused(CALLING_AE_NOT_REGISTERED, "calling AE title not registered")
        if calling_ae.strip() not in org.modality_aes:
            raise StoreRefused(statuses.NOT_AUTHORIZED, "a workstation AE title may not store")
        return org

    def refused(self, calling_ae: str, sop_instance_uid: str, refused: StoreRefused, peer: str | None) -> None:
        """Note a refused C-STORE for the sending clinic (from any thread; never blocks)."""
        org = self.organization_for(calling_ae)
        self.refusals.note(kind="refused", organization=org.id if org is not None else None, calling_ae=calling_ae,
                           sop_instance_uid=sop_instance_uid, status=refused.status, reason=refused.comment,
                           peer=peer)

    def _plugin_handlers(self) -> list[tuple[Any, ...]]:
        handlers: list[tuple[Any, ...]] = []
        for name in PLUGINS:
            try:
                module = importlib.import_module(f"{__package__}.{name}")
            except ImportError as exc:
                if exc.name != f"{__package__}.{name}":
                    # Present but broken: say so loudly, keep ingest running.
                    log.exception("gateway plugin failed to import", extra={"plugin": name})
                continue
            handlers += module.install(self)
            log.info("gateway plugin installed", extra={"plugin": name})
        return handlers

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        settings = self.rt.settings
        self.refusals.start()
        receive_into(self.rt.blobs.staging_dir())
        if self.role == "main":
            # Before anything listens: what any process acknowledged before a crash gets indexed.
            for slot in journal_slots(self.rt):
                if slot != self.slot:
                    other = Ingest(self.rt, journal_for(self.rt, slot))
                    await other.recover()
                    await other.close()
        await self.ingest.recover()
        if self.role == "main" and settings.gateway_indexer == "process":
            from .index_process import IndexProcess
            self.index_process = IndexProcess(settings)
            await self.index_process.start()
            self.indexer_address = self.index_process.address
        if self.indexer_address is not None:
            await self.ingest.index_in_process(self.indexer_address)
        if self.role == "main":
            self._sweep = asyncio.create_task(self._sweep_orphans(), name="pacs_gateway:sweep")
        self.ae = build_ae(self)
        self.ae.network_timeout = settings.dicom_network_timeout
        handlers = StorageSCP(self, self.ingest).handlers() + self._plugin_handlers()
        ssl_context = server_ssl_context(settings.dicom_tls_cert, settings.dicom_tls_key, settings.dicom_tls_ca)
        address = (settings.bind_host, settings.dicom_port)
        if settings.dicom_native_ul:
            # The asyncio upper layer owns the port; pynetdicom serves what it hands off (TLS already undone).
            self._server = self.ae.make_server(address, evt_handlers=handlers, server_class=HandOffServer)
            self.ae._servers.append(self._server)
            self._native = NativeServer(self, self.ingest, contexts=self.ae.supported_contexts,
                                        hand_off=self._server, ssl_context=ssl_context,
                                        timeout=settings.dicom_network_timeout,
                                        max_associations=self.ae.maximum_associations,
                                        max_per_ae=settings.dicom_max_associations_per_ae,
                                        max_per_peer=settings.dicom_max_associations_per_peer,
                                        max_pdu=self.ae.maximum_pdu_size)
            self.dicom_port = await self._native.start(settings.bind_host, settings.dicom_port)
            if self.ingest.journal is not None:  # one connection (C-STOREs come one at a time): flush inline
                native = self._native
                self.ingest.journal.alone = lambda: native.active <= 1
        else:
            self._server = self.ae.make_server(address, evt_handlers=handlers, server_class=ReusePortServer,
                                               ssl_context=ssl_context)
            self.ae._servers.append(self._server)
            self.dicom_port = self._server.server_address[1]
            # Its own thread: serve_forever never returns, and must not hold a default-executor slot.
            threading.Thread(target=self._server.serve_forever, name=f"dicom-acceptor:{self.dicom_port}",
                             daemon=True).start()
        if self.role == "main":
            if settings.gateway_workers > 1:
                from .workers import WorkerPool
                self.workers = WorkerPool(settings, self.dicom_port, settings.gateway_workers - 1,
                                          indexer_address=self.indexer_address)
                await self.workers.start()
            assert self.announcer is not None
            await self.announcer.start()
            from .commitment_sender import CommitmentSender  # reports held in the store, across restarts
            self.commitments = CommitmentSender(self)
            await self.commitments.start()
        self.ready = True
        log.info("DICOM node listening", extra={"ae_title": settings.ae_title, "port": self.dicom_port,
                                                "tls": ssl_context is not None, "role": self.role,
                                                "upper_layer": "native" if self._native else "pynetdicom",
                                                "workers": settings.gateway_workers})

    async def _sweep_orphans(self) -> int:
        try:
            removed = await sweep_orphans(self.rt)
        except Exception:
            log.exception("orphan sweep failed")
            return 0
        if removed:
            log.warning("orphan sweep removed files a crash left unreferenced", extra={"removed": removed})
        return removed

    async def stop(self) -> None:
        self.ready = False
        if getattr(self, "commitments", None) is not None:
            await self.commitments.stop()
            self.commitments = None
        if self.announcer is not None:
            await self.announcer.stop()
        if self.workers is not None:
            await self.workers.stop()
            self.workers = None
        if self._native is not None:
            native, self._native = self._native, None
            await native.stop()
        if self._server is not None:
            server, self._server = self._server, None
            assert self.ae is not None
            if isinstance(server, HandOffServer):
                for assoc in self.ae.active_associations:
                    assoc.abort()
                await asyncio.to_thread(server.server_close)
                self.ae._servers.remove(server)
            else:
                # Finish associations in flight briefly, then close the socket.
                await asyncio.to_thread(server.shutdown)
                for assoc in self.ae.active_associations:
                    assoc.abort()
        await self.ingest.close()  # every C-STORE answered is indexed: leave the journal empty
        if self.index_process is not None:  # after every receiving process had its records indexed
            await self.index_process.stop()
            self.index_process = None
        if self._sweep is not None:
            self._sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep
        await self.refusals.stop()
