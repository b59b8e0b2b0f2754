"""The api service: an aiohttp server on ``YILIAN_HTTP_PORT``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web

from ..core.runtime import Runtime
from ..core.passwords import USERS
from ..core.tls import server_context
from .app import create_app
from .problems import ProblemAppRunner

log = logging.getLogger("yilian.api")


class ApiService:
    name = "api"

    def __init__(self, rt: Runtime, *, clock: Callable[[], float] = time.time) -> None:
        self.rt = rt
        self.clock = clock
        self.ready = False
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        # Written before the port opens, so `yilian token` finds it as soon as `ready` is printed.
        self.rt.settings.secret(create=True)
        app = create_app(self.rt, clock=self.clock)
        self._runner = ProblemAppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        settings = self.rt.settings
        site = web.TCPSite(self._runner, settings.bind_host, settings.http_port, reuse_address=True,
                           ssl_context=server_context(settings.http_tls_cert, settings.http_tls_key))
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.ready = True
        await self._first_admin_hint()
        log.info("http listening", extra={"listener": "http", "host": self.rt.settings.bind_host,
                                          "port": self.port})

    async def _first_admin_hint(self) -> None:
        """Say so when no admin can sign in at /signin yet (a fresh install): how the first one gets a password."""
        admins = sorted(u.id for u in self.rt.consortium.users.values() if u.role == "admin" and not u.disabled)
        for admin in admins:
            if ((await self.rt.store.get(USERS, admin)) or {}).get("password_hash"):
                return
        if admins:
            log.warning("no admin has a desk password yet: run `yilian user passwd %s` (same YILIAN_DATA_DIR / "
                        "YILIAN_STORE_URL), then sign in at /signin", admins[0], extra={"admins": admins})

    async def stop(self) -> None:
        self.ready = False
        if self._runner is not None:
            await self._runner.cleanup()
