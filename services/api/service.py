"""The api service: an aiohttp server on ``YILIAN_HTTP_PORT``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web

from ..core.runtime import Runtime
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
        site = web.TCPSite(self._runner, self.rt.settings.bind_host, self.rt.settings.http_port,
                           reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.ready = True
        log.info("http listening", extra={"listener": "http", "host": self.rt.settings.bind_host,
                                          "port": self.port})

    async def stop(self) -> None:
        self.ready = False
        if self._runner is not None:
            await self._runner.cleanup()
