"""Routes by user role; every ``/api/v1`` path is declared here and in ``schemas/openapi.yaml``."""

from __future__ import annotations

from aiohttp import web

from . import admin, clinic, commands, ecg, reader, session
from ...monitor import routes as monitor  # live queue monitor (services/monitor)
from . import consultations  # remote consultation (远程会诊)
from . import orders  # exam requests (申请管理)
from . import results  # result inbox, live push, dead letters (services/delivery)
from . import records  # retention-aware deletion, sealing (封存)
from . import reports  # report templates and report versions (docs/reports.md)
from . import identity  # patient identity across the consortium (docs/identity.md)
from . import worklist_stream  # the reader's worklist, live (docs/desks.md)
from . import signin  # desk sessions: sign in, who is signed in, sign out (docs/desks.md)
from . import users  # users and passwords (admin; a user's own password)


def add_routes(app: web.Application) -> None:
    for module in (session, clinic, reader, commands, admin):
        app.router.add_routes(module.routes)
    app.router.add_routes(ecg.routes)  # ECG reading view
    app.router.add_routes(consultations.routes)
    app.router.add_routes(records.routes)
    app.router.add_routes(reports.routes)
    app.router.add_routes(orders.routes)
    app.router.add_routes(identity.routes)
    app.router.add_routes(signin.routes)
    app.router.add_routes(users.routes)
    app.router.add_routes(monitor.routes)
    results.setup(app)  # result inbox, live push, dead letters (services/delivery)
    worklist_stream.setup(app)
