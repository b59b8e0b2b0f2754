"""Records custody: deletion under retention periods, and sealing (封存) a patient's records.

Admins delete; admins and auditors seal, read seals and unseal.  Every attempt is audited:
what the store did in its own transaction, what it refused here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web

from ...core import sealing
from ...core.auth import Principal
from ...core.deletion import Refused, delete_report, delete_study
from ...workflow.policy import sees_report
from ..context import not_found, page, record, remote, require_role, runtime
from ..problems import Problem, json_response
from ..scope import sees_study
from ..validation import json_body, known_query, query_int

routes = web.RouteTableDef()

OUTCOMES = {404: "not_found", 409: "refused"}
ANY_ROLE = ("clinic", "reader", "coordinator", "admin", "auditor")


async def _refused(request: web.Request, action: str, resource: str, exc: Refused | sealing.SealError) -> Problem:
    await record(request, action, resource, outcome=OUTCOMES.get(exc.status, "refused"),
                 detail={"error": exc.detail, **getattr(exc, "extensions", {})})
    return Problem(exc.status, exc.detail, slug=exc.slug, **getattr(exc, "extensions", {}))


async def _delete(request: web.Request, collection: str, kind: str, id: str,
                  sees: Callable[[Principal, dict[str, Any]], Awaitable[bool]],
                  delete: Callable[..., Awaitable[dict[str, Any]]]) -> web.Response:
    """Only an admin deletes; another role gets 403 for what it sees, 404 for what it may not know exists."""
    action, resource, rt = f"{kind}.delete", f"{kind}/{id}", runtime(request)
    who = require_role(request, *ANY_ROLE)
    if who.role != "admin":
        doc = await rt.store.get(collection, id)
        if doc is None or not await sees(who, doc):
            raise await not_found(request, action, resource, f"{kind} {id!r}")
        await record(request, action, resource, outcome="forbidden")
        raise Problem(403, f"role {who.role!r} may not delete records (admin only)")
    try:
        result = await delete(id, now=datetime.now(UTC), actor=who.user_id, role=who.role, remote=remote(request))
    except Refused as exc:
        raise await _refused(request, action, resource, exc) from None
    return json_response(result)


@routes.delete("/api/v1/studies/{study_uid}")
async def remove_study(request: web.Request) -> web.Response:
    rt = runtime(request)
    return await _delete(request, "studies", "study", request.match_info["study_uid"],
                         lambda who, doc: sees_study(rt.store, who, doc),
                         partial(delete_study, rt.store, rt.blobs, rt.consortium.retention))


async def _sees_report(who: Principal, doc: dict[str, Any]) -> bool:
    return sees_report(who, doc)


@routes.delete("/api/v1/reports/{report_id}")
async def remove_report(request: web.Request) -> web.Response:
    rt = runtime(request)
    return await _delete(request, "reports", "report", request.match_info["report_id"], _sees_report,
                         partial(delete_report, rt.store, rt.consortium.retention))


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    """A seal without its report copies (``GET /seals/{id}`` has them)."""
    return {k: v for k, v in doc.items() if k != "reports"}


@routes.post("/api/v1/seals")
async def create_seal(request: web.Request) -> web.Response:
    who = require_role(request, "admin", "auditor")
    body = await json_body(request)
    rt = runtime(request)
    resource = f"patient/{body['organization']}|{body['patient_id']}"
    try:
        doc = await sealing.seal(rt.store, rt.blobs, organization=body["organization"], patient_id=body["patient_id"],
                                 reason=body["reason"], actor=who.user_id, role=who.role, remote=remote(request))
    except sealing.SealError as exc:
        raise await _refused(request, "patient.seal", resource, exc) from None
    return json_response(_summary(doc), status=201)


@routes.get("/api/v1/seals")
async def list_seals(request: web.Request) -> web.Response:
    require_role(request, "admin", "auditor")
    known_query(request, ("organization", "patient_id", "state", "limit", "offset"))
    limit, offset = query_int(request, "limit", 100, 1, 1000), query_int(request, "offset", 0, 0, 10**9)
    where = {k: v for k in ("organization", "patient_id", "state") if (v := request.query.get(k))}
    items = await runtime(request).store.find(sealing.SEALS, where, sort=(("sealed_at", -1),), limit=limit,
                                              offset=offset)
    await record(request, "seal.list", "seals", detail={"seal_ids": [d["id"] for d in items]})
    return json_response(page([_summary(d) for d in items], limit, offset))


async def _seal(request: web.Request, action: str) -> dict[str, Any]:
    seal_id = request.match_info["seal_id"]
    doc = await runtime(request).store.get(sealing.SEALS, seal_id)
    if doc is None:
        await record(request, action, f"seal/{seal_id}", outcome="not_found")
        raise Problem(404, f"no seal {seal_id!r}")
    return doc


@routes.get("/api/v1/seals/{seal_id}")
async def get_seal(request: web.Request) -> web.Response:
    require_role(request, "admin", "auditor")
    doc = await _seal(request, "seal.read")
    await record(request, "seal.read", f"seal/{doc['id']}", organization=doc["organization"])
    return json_response(doc)


@routes.get("/api/v1/seals/{seal_id}/verification")
async def verify_seal(request: web.Request) -> web.Response:
    require_role(request, "admin", "auditor")
    doc = await _seal(request, "seal.verify")
    rt = runtime(request)
    result = await sealing.verify(rt.store, rt.blobs, doc)
    await record(request, "seal.verify", f"seal/{doc['id']}", organization=doc["organization"],
                 outcome="success" if result["intact"] else "broken", detail={"problems": result["problems"]})
    return json_response(result)


@routes.post("/api/v1/seals/{seal_id}/unseal")
async def unseal(request: web.Request) -> web.Response:
    who = require_role(request, "admin", "auditor")
    body = await json_body(request)
    seal_id = request.match_info["seal_id"]
    try:
        doc = await sealing.unseal(runtime(request).store, seal_id, reason=body["reason"], actor=who.user_id,
                                   role=who.role, remote=remote(request))
    except sealing.SealError as exc:
        raise await _refused(request, "patient.unseal", f"seal/{seal_id}", exc) from None
    return json_response(_summary(doc))
