"""Admin: the consortium configuration.  Audit: the append-only log, read-only."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core import audit
from ..context import page, record, require_role, runtime
from ..problems import Problem, json_response
from ..validation import known_query, query_instant, query_int

routes = web.RouteTableDef()

AUDIT_QUERY = ("actor", "resource", "action", "organization", "from", "to", "limit", "offset")


@routes.get("/api/v1/consortium")
async def consortium(request: web.Request) -> web.Response:
    require_role(request, "admin")
    rt = runtime(request)
    await record(request, "config.read", f"consortium/{rt.consortium.id}")
    return json_response({"id": rt.consortium.id, "digest": rt.consortium.digest(), "document": rt.consortium.to_dict()})


@routes.get("/api/v1/audit")
async def audit_log(request: web.Request) -> web.Response:
    """Newest first.  ``resource`` ending in ``*`` is a prefix (``study/*``)."""
    require_role(request, "auditor", "admin")
    known_query(request, AUDIT_QUERY)
    limit, offset = query_int(request, "limit", 100, 1, 1000), query_int(request, "offset", 0, 0, 10**9)
    where: dict[str, Any] = {}
    for name in ("actor", "action", "organization"):
        if value := request.query.get(name):
            where[name] = value
    if resource := request.query.get("resource"):
        where["resource"] = {"$prefix": resource[:-1]} if resource.endswith("*") else resource
    start, end = query_instant(request, "from"), query_instant(request, "to")
    if start and end and start >= end:
        raise Problem(422, f"'from' ({start}) must be before 'to' ({end})", slug="invalid-query")
    time: dict[str, str] = {}
    if start:
        time["$gte"] = start
    if end:
        time["$lt"] = end
    if time:
        where["time"] = time
    items = await runtime(request).store.find("audit", where, sort=(("time", -1), ("id", 1)), limit=limit,
                                              offset=offset)
    # Reading the audit log is itself audited (after the query, so it does not see itself).
    await record(request, "audit.read", "audit", detail={"filters": {k: v for k, v in request.query.items()}})
    return json_response(page(items, limit, offset))


@routes.get("/api/v1/audit/verification")
async def audit_verification(request: web.Request) -> web.Response:
    """Walk the audit trail's hash chain; names the first altered or missing record."""
    require_role(request, "auditor", "admin")
    known_query(request, ())
    result = await audit.verify(runtime(request).store)
    # Recorded after the walk, so the verification does not cover its own record.
    await record(request, "audit.verify", "audit", outcome="success" if result.intact else "broken",
                 detail={"records": result.records, "head_seq": result.head_seq,
                         "first_break": result.to_dict()["first_break"]})
    return json_response(result.to_dict())
