"""Routes by user role; every ``/api/v1`` path is declared here and in ``schemas/openapi.yaml``."""

from __future__ import annotations

from aiohttp import web

from . import admin, clinic, commands, ecg, reader, session
from ...monitor import routes as monitor  # live queue monitor (services/monitor)
from ...monitor import figure_routes as figures  # the consortium's figures and settlement (services/monitor)
from ...monitor import referrals as referral_figures  # referral and 互认 figures (services/monitor/referrals.py)
from . import consultations  # remote consultation (远程会诊)
from . import orders  # exam requests (申请管理)
from . import results  # result inbox, live push, dead letters (services/delivery)
from . import records  # retention-aware deletion, sealing (封存)
from . import reports  # report templates and report versions (docs/reports.md)
from . import identity  # patient identity across the consortium (docs/identity.md)
from . import worklist_stream  # the reader's worklist, live (docs/desks.md)
from . import signin  # desk sessions: sign in, who is signed in, sign out (docs/desks.md)
from . import users  # users and passwords (admin; a user's own password)
from . import quality  # image quality grading and peer review (docs/quality.md)
from . import rosters  # duty rosters (排班管理) and who is on duty now
from . import edge  # township edges (前置机): complete, heartbeat (docs/edge.md)
from . import edge_worklist  # an edge's worklist copy and its MPPS (docs/edge.md)
from . import referrals  # two-way referral (双向转诊, docs/referral.md)
from . import recognition  # result mutual recognition (结果互认, docs/referral.md)


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
    app.router.add_routes(quality.routes)
    app.router.add_routes(rosters.routes)
    app.router.add_routes(edge.routes)
    app.router.add_routes(edge_worklist.routes)
    app.router.add_routes(referrals.routes)
    app.router.add_routes(recognition.routes)
    app.router.add_routes(monitor.routes)
    app.router.add_routes(figures.routes)
    app.router.add_routes(referral_figures.routes)
    results.setup(app)  # result inbox, live push, dead letters (services/delivery)
    worklist_stream.setup(app)
