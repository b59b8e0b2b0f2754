"""Exam requests (申请管理): a clinic (or its HIS) creates, lists, changes and cancels orders.

Commands go to the workflow's :func:`services.workflow.service.execute` (role, scope, one
transaction with events and audit); reads are scoped like everything else: a clinic sees its
organisation's orders, an admin all, and what the caller may not see is 404.  See docs/orders.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ...workflow.orders import commands as c
from ...workflow.orders.identity import mask
from ...workflow.orders.model import STATES
from ...workflow.orders.service import ORDERS, overdue_before, sees
from ..context import not_found, page, record, require_role, runtime
from ..problems import json_response
from ..validation import known_query, query_choice, query_int
from .commands import run_command

routes = web.RouteTableDef()

BASE = "/api/v1/orders"
ROLES = ("clinic", "admin")


async def _run(request: web.Request, action: str, build: Callable[[dict[str, Any]], c.Command], *,
               status: int = 200) -> web.Response:
    oid = request.match_info.get("order_id")
    return await run_command(request, f"order.{action}", f"order/{oid}" if oid else "orders", build,
                             roles=ROLES, status=status, present=public)


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """An order as the API shows it: the resident ID masked (the worklist carries it whole to the modality)."""
    return {**doc, "resident_id": mask(doc.get("resident_id"))}


@routes.post(BASE)
async def create(request: web.Request) -> web.Response:
    fields = ("sex", "birth_date", "resident_id", "body_part", "procedure_code", "procedure_description",
              "green_channel", "station_ae", "organization", "requesting_department", "record_class", "recognition")
    return await _run(request, "create", lambda b: c.CreateOrder(
        patient_id=b["patient_id"], patient_name=b["patient_name"], kind=b["kind"], modality=b["modality"],
        clinical_question=b["clinical_question"], requesting_physician=b["requesting_physician"],
        scheduled_at=b["scheduled_at"], priority=b.get("priority", "routine"),
        signed_resident=b.get("signed_resident", False), remote_reading=b.get("remote_reading", True),
        **{k: b.get(k) for k in fields}), status=201)


@routes.get(BASE)
async def list_orders(request: web.Request) -> web.Response:
    """Newest first; ``overdue=true``: still scheduled or in progress, no study, past the overdue time."""
    who = require_role(request, *ROLES)
    known_query(request, ("state", "overdue", "limit", "offset"))
    limit, offset = query_int(request, "limit", 50, 1, 500), query_int(request, "offset", 0, 0, 10**9)
    state = query_choice(request, "state", STATES)
    overdue = query_choice(request, "overdue", ("true", "false")) == "true"
    rt = runtime(request)
    where: dict[str, Any] = {} if who.role == "admin" else {"organization": who.organization}
    if state is not None:
        where["state"] = state
    sort: tuple[tuple[str, int], ...] = (("created_at", -1),)
    if overdue:
        where.update(study_uid=None, scheduled_at={"$lt": overdue_before(rt)})
        if state is None:
            where["state"] = {"$in": ["scheduled", "in_progress"]}
        sort = (("scheduled_at", 1),)
    items = await rt.store.find(ORDERS, where, sort=sort, limit=limit, offset=offset)
    await record(request, "order.list", "orders", organization=where.get("organization"),
                 detail={"order_ids": [d["id"] for d in items]})
    return json_response(page([public(d) for d in items], limit, offset))


async def _visible(request: web.Request, action: str) -> dict[str, Any]:
    # Any role may ask; only the ordering clinic (and an admin) sees it, for the rest it does not exist.
    who = require_role(request, *ROLES, "reader", "coordinator")
    oid = request.match_info["order_id"]
    doc = await runtime(request).store.get(ORDERS, oid)
    if doc is None or not sees(who, doc):
        raise await not_found(request, action, f"order/{oid}", f"order {oid!r}")
    return doc


@routes.get(BASE + "/{order_id}")
async def get_order(request: web.Request) -> web.Response:
    doc = await _visible(request, "order.read")
    await record(request, "order.read", f"order/{doc['id']}", organization=doc["organization"])
    return json_response(public(doc))


@routes.post(BASE + "/{order_id}/change")
async def change(request: web.Request) -> web.Response:
    oid = request.match_info["order_id"]
    return await _run(request, "change", lambda b: c.ChangeOrder(oid, dict(b["changes"]), b.get("reason", "")))


@routes.post(BASE + "/{order_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    oid = request.match_info["order_id"]
    return await _run(request, "cancel", lambda b: c.CancelOrder(oid, b["reason"]))
