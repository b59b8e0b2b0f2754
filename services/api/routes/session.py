"""The front door (``GET /``), who am I, revoke a token, and the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from ...core import audit
from ...core.auth import revoke
from ..context import principal, remote, runtime
from ..dicomweb.multipart import parse_accept
from ..problems import Problem, json_response
from ..validation import json_body, spec

routes = web.RouteTableDef()


INDEX = {"name": "Yilian (医联)", "api": "/api/v1", "openapi": "/api/v1/openapi.json", "dashboard": "/dashboard",
         "desk": "/desk", "signin": "/signin",
         "dicomweb": "/dicomweb", "health": "/healthz", "ready": "/readyz"}


@routes.get("/")
async def front_door(request: web.Request) -> web.StreamResponse:
    """A browser goes to its desk (via /signin); a JSON client gets where things are (public: it names no data)."""
    for media in parse_accept(request.headers.get("Accept")):
        if media.media_type in ("text/html", "application/xhtml+xml"):
            raise web.HTTPSeeOther("/desk")
        if media.media_type in ("application/json", "*/*") or media.media_type.endswith("+json"):
            break
    return json_response(INDEX)


@routes.get("/api/v1/openapi.json")
async def openapi(_: web.Request) -> web.Response:
    return json_response(spec())


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    who, rt = principal(request), runtime(request)
    user = rt.consortium.users[who.user_id]
    org = rt.consortium.organizations.get(who.organization)
    expires = (datetime.fromtimestamp(who.expires_at, UTC).isoformat().replace("+00:00", "Z")
               if who.expires_at else None)
    return json_response({"user_id": who.user_id, "name": user.name, "role": who.role,
                          "organization": who.organization, "organization_name": org.name if org else None,
                          "centre": who.centre, "token_id": who.token_id, "token_expires_at": expires})


@routes.post("/api/v1/auth/revoke")
async def revoke_token(request: web.Request) -> web.Response:
    """The caller's own token, or (admin) any token id; effective on the next request."""
    who, rt = principal(request), runtime(request)
    body = await json_body(request)
    token_id = body.get("token_id") or who.token_id
    own = token_id == who.token_id
    if not own and who.role != "admin":
        raise Problem(403, "only an admin may revoke another user's token; omit token_id to revoke your own")
    async with rt.store.transaction() as tx:
        fresh = await revoke(tx, token_id, by=who.user_id, expires_at=who.expires_at if own else None,
                             reason=body.get("reason"))
        await audit.record(tx, actor=who.user_id, role=who.role, action="token.revoke", resource=f"token/{token_id}",
                           organization=who.organization, remote=remote(request),
                           detail={"own": own, "already_revoked": not fresh})
    return json_response({"token_id": token_id, "revoked": True})
