"""Duty rosters (排班管理) and who is on duty now (docs/quality.md#duty-rosters).

A coordinator sets his centre's shifts for a period (the admin any centre's); the centre's people
read its roster; ``GET /api/v1/on-duty`` is the data behind the dashboard's "who is on duty now".
Times go in with their offset (a coordinator writes +08:00) and come back in UTC with the local
time beside them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core import roster
from ...core.localtime import LocalTime
from ...core.times import iso
from ...workflow import rosters
from ...workflow.context import settings_of
from ...workflow.errors import WorkflowError
from ..context import record, require_role, runtime
from ..problems import Problem, from_workflow, json_response
from ..validation import known_query, query_choice
from .commands import run_command

routes = web.RouteTableDef()


def _local(rt, shift: dict[str, Any]) -> dict[str, Any]:
    local = LocalTime.named(rt.consortium.timezone)
    return {**shift, "start_local": local.iso(shift["start"]), "end_local": local.iso(shift["end"])}


def _centre_in_scope(request: web.Request, who, centre: str) -> None:
    rt = runtime(request)
    if centre not in rt.consortium.centres or (who.role != "admin" and who.centre != centre):
        raise Problem(404, f"no centre {centre!r}")


@routes.put("/api/v1/centres/{centre}/roster")
async def set_roster(request: web.Request) -> web.Response:
    centre = request.match_info["centre"]
    rt = runtime(request)
    return await run_command(request, "roster.set", f"centre/{centre}/roster", lambda b: rosters.SetRoster(
        centre, b["start"], b["end"], tuple(b["shifts"])), roles=("coordinator", "admin"),
        present=lambda r: {**r, "shifts": [_local(rt, s) for s in r["shifts"]]})


@routes.get("/api/v1/centres/{centre}/roster")
async def get_roster(request: web.Request) -> web.Response:
    who = require_role(request, "reader", "coordinator", "admin")
    known_query(request, ("from", "to"))
    centre = request.match_info["centre"]
    _centre_in_scope(request, who, centre)
    rt = runtime(request)
    try:
        start = rosters.instant(request.query["from"], "from") if "from" in request.query else None
        end = rosters.instant(request.query["to"], "to") if "to" in request.query else None
    except WorkflowError as exc:
        raise from_workflow(exc) from None
    span = {**({"$gte": start} if start else {}), **({"$lt": end} if end else {})}
    where: dict[str, Any] = {"centre": centre, **({"start": span} if span else {})}
    shifts = await rt.store.find(rosters.SHIFTS, where, sort=(("start", 1), ("reader", 1)), limit=2000)
    await record(request, "roster.read", f"centre/{centre}/roster")
    return json_response({"centre": centre, "min_on_duty": rt.consortium.centres[centre].min_on_duty,
                          "items": [_local(rt, s) for s in shifts]})


@routes.get("/api/v1/on-duty")
async def on_duty(request: web.Request) -> web.Response:
    """Per centre: who is on duty now (day, night, on call), the readers counted for capacity, the leads."""
    who = require_role(request, "reader", "coordinator", "admin")
    known_query(request, ("centre",))
    rt = runtime(request)
    wanted = query_choice(request, "centre")
    if who.role != "admin":
        if wanted not in (None, who.centre):
            raise Problem(404, f"no centre {wanted!r}")
        wanted = who.centre
    elif wanted is not None and wanted not in rt.consortium.centres:
        raise Problem(404, f"no centre {wanted!r}")
    now = iso(settings_of(rt).now())
    centres = [wanted] if wanted else list(rt.consortium.centres)
    out = []
    for centre in centres:
        rostered = await rosters.has_roster(rt.store, centre)
        shifts = await rosters.shifts_at(rt.store, centre, now) if rostered else []
        out.append({"centre": centre, "rostered": rostered, "shifts": [_local(rt, s) for s in shifts],
                    "readers": await rosters.readers_on_duty(rt.store, rt.consortium, centre, now),
                    "on_call": roster.readers_on_duty(shifts, now, kinds=("on_call",)),
                    "leads": rosters.leads(rt.consortium, centre)})
    await record(request, "roster.on_duty", "on-duty", detail={"centres": centres})
    return json_response({"at": now, "centres": out})
