"""DICOMweb (PS3.18) under ``/dicomweb``: QIDO-RS, WADO-RS, STOW-RS, and CORS for browser viewers.

Specified by PS3.18 rather than ``schemas/openapi.yaml``; see ``docs/dicomweb.md``.
"""

from __future__ import annotations

from aiohttp import web

from ..context import RUNTIME
from . import cors
from .routes import routes


def add_dicomweb(app: web.Application) -> None:
    """Add the routes, and CORS (outermost, so preflights skip authentication) for the whole app."""
    app.router.add_routes(routes)
    app.middlewares.insert(0, cors.cors_middleware(app[RUNTIME].settings.cors_origins))
    app.on_response_prepare.append(cors.on_prepare)
