"""Bootstrap: build the adapters the URLs name, start services, stop them cleanly.

``yilian up`` runs every service in one process; ``yilian serve NAME`` runs one.  Either
way each service is built by its package's ``build(runtime)`` and shares one store, bus
and blob store.  Adapters are chosen by URL scheme only, never by code.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .blobs.port import BlobStore
from .bus.port import Bus, TopicMismatch
from .consortium import Consortium, consortium_summary, load_consortium
from .events import Event, SchemaRegistry, registry
from .localtime import LocalTime
from .private import make_private, restrict_new_files
from .settings import Settings
from .store.port import Store

log = logging.getLogger("yilian.runtime")

SERVICE_NAMES = ("pacs_gateway", "workflow", "api", "delivery", "monitor")


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def make_store(url: str, validate: Callable[[Event], None]) -> Store:
    if url.startswith("sqlite:"):
        from .store.sqlite import SqliteStore
        return SqliteStore(url, validate=validate)
    if url.startswith(("mongodb:", "mongodb+srv:")):
        from .store.mongo import MongoStore
        return MongoStore(url, validate=validate)
    raise SystemExit(f"YILIAN_STORE_URL: unsupported scheme in {url!r} (use sqlite:/// or mongodb://)")


def make_bus(url: str, store: Store, validate: Callable[[Event], None], settings: Settings) -> Bus:
    if url.startswith("embedded:"):
        from .bus.embedded import EmbeddedBus
        return EmbeddedBus(store, validate=validate)
    if url.startswith("kafka://"):
        from .bus.kafka import KafkaBus
        return KafkaBus(url, store=store, validate=validate, idempotent=settings.kafka_idempotent)
    raise SystemExit(f"YILIAN_BUS_URL: unsupported scheme in {url!r} (use embedded: or kafka://host:9092)")


def make_blobs(url: str, store: Store) -> BlobStore:
    if url.startswith("file:"):
        from .blobs.files import FileBlobStore
        return FileBlobStore(url)
    if url.startswith("gridfs:"):
        from .blobs.gridfs import GridFSBlobStore
        return GridFSBlobStore(url, store=store)
    raise SystemExit(f"YILIAN_BLOB_URL: unsupported scheme in {url!r} (use file:/// or gridfs:)")


@dataclass
class Runtime:
    """Everything a service needs, built once per process."""

    settings: Settings
    consortium: Consortium
    store: Store
    bus: Bus
    blobs: BlobStore
    schemas: SchemaRegistry
    services: list[Service] = field(default_factory=list)
    # Things services publish for each other in one process (e.g. the api mounts monitor routes).
    shared: dict[str, Any] = field(default_factory=dict)
    _background: list[Any] = field(default_factory=list)

    @property
    def validate(self) -> Callable[[Event], None]:
        return self.schemas.validate

    def source(self, service: str) -> str:
        return f"/yilian/{service}"

    @property
    def local_time(self) -> LocalTime:
        """The consortium's time zone (``YILIAN_TIMEZONE`` over the file's ``timezone``)."""
        return LocalTime.named(self.settings.timezone or self.consortium.timezone)


async def build_runtime(settings: Settings) -> Runtime:
    restrict_new_files()  # every process that touches the data: files 0600, directories 0700
    schemas = registry()
    consortium = load_consortium(settings.consortium_path)
    store = make_store(settings.store_url, schemas.validate)
    await store.open()
    bus = make_bus(settings.bus_url, store, schemas.validate, settings)
    blobs = make_blobs(settings.blob_url, store)
    await blobs.open()
    rt = Runtime(settings, consortium, store, bus, blobs, schemas)
    await remember_consortium(rt)
    return rt


async def remember_consortium(rt: Runtime) -> None:
    """Keep the loaded configuration in the store (the admin API edits it there)."""
    summary = consortium_summary(rt.consortium)
    async with rt.store.transaction() as tx:
        current = await tx.get("config", "consortium")
        if current is None or current.get("digest") != summary["digest"]:
            await tx.put("config", {"id": "consortium", "digest": summary["digest"],
                                    "document": rt.consortium.to_dict()})
            tx.emit(Event("config.loaded", subject=rt.consortium.id, data=summary, source=rt.source("runtime")))
    log.info("consortium loaded", extra={**summary, "path": str(rt.settings.consortium_path)})


def load_service(rt: Runtime, name: str) -> Service:
    if name not in SERVICE_NAMES:
        raise SystemExit(f"unknown service {name!r} (one of {', '.join(SERVICE_NAMES)})")
    module = importlib.import_module(f"services.{name}")
    return module.build(rt)


class _HealthListener:
    """``/healthz`` and ``/readyz`` on ``YILIAN_HTTP_PORT`` for a process that does not run the api."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    async def stop(self) -> None:
        await self.runner.cleanup()


async def _health_listener(rt: Runtime) -> _HealthListener:
    from aiohttp import web

    from .health import add_health_routes
    app = web.Application()
    add_health_routes(app, rt)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, rt.settings.bind_host, rt.settings.http_port, reuse_address=True).start()
    rt.shared["health_port"] = runner.addresses[0][1]
    log.info("health listening", extra={"listener": "http", "port": rt.shared["health_port"]})
    return _HealthListener(runner)


async def run(settings: Settings, names: tuple[str, ...], *, ready: Callable[[Runtime], None] | None = None,
              stop: asyncio.Event | None = None) -> None:
    """Build, start ``names``, wait for ``stop``, then stop everything in reverse order."""
    await asyncio.to_thread(make_private, settings.data_dir)
    rt = await build_runtime(settings)
    stop = stop or asyncio.Event()
    try:
        for name in names:
            rt.services.append(load_service(rt, name))
        try:
            for service in rt.services:
                await service.start()
                log.info("service started", extra={"service": service.name})
            if "api" not in names:
                # Orchestrators probe every process, not only the api's.
                rt._background.append(await _health_listener(rt))
        except OSError as exc:  # a port in use or an address not on this host
            raise SystemExit(f"cannot listen: {exc.strerror or exc} (check YILIAN_BIND_HOST={settings.bind_host}, "
                             f"YILIAN_HTTP_PORT={settings.http_port}, YILIAN_DICOM_PORT={settings.dicom_port})") \
                from exc
        if rt.bus.relays_outbox:
            from . import holders
            from .bus.relay import OutboxRelay
            # Every process may relay every partition of the outbox (the api writes the workflow's
            # events); it holds its own services' and takes the others only while nobody does.
            relay = OutboxRelay(rt.store, rt.bus, sources=[rt.source(n) for n in (*SERVICE_NAMES, "runtime")],
                                own=[rt.source(n) for n in names], lease_seconds=settings.relay_lease_seconds,
                                holder=holders.of(rt))
            await relay.start()
            rt._background.append(relay)
            rt.shared["outbox_relay"] = relay
        try:
            await rt.bus.start()
        except TopicMismatch as exc:  # an operator's decision, not a retry: say what to do and stop
            raise SystemExit(str(exc)) from exc
        if ready is not None:
            ready(rt)
        await stop.wait()
    finally:
        log.info("stopping")
        for service in reversed(rt.services):
            with contextlib.suppress(Exception):
                await service.stop()
        with contextlib.suppress(Exception):
            await rt.bus.stop()
        for task in rt._background:
            with contextlib.suppress(Exception):
                await task.stop()
        await rt.blobs.close()
        await rt.store.close()
        log.info("stopped")
