"""What every service's HTTP routes share, whichever service's app serves them: the runtime and
the authenticated caller of a request, role checks, JSON answers and errors as
``application/problem+json`` (RFC 9457: type, title, status, detail, instance).

The api's middleware (``services/api/problems.py``, ``services/api/auth.py``) fills these in and
turns a :class:`Problem` into its document; the monitor's routes use them without importing the api.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from aiohttp import web

from .auth import Principal
from .runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)
PRINCIPAL = web.RequestKey("principal", Principal)

CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:yilian:problem:"

dumps = partial(json.dumps, ensure_ascii=False)

TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 500: "Internal Server Error", 503: "Service Unavailable",
}
SLUGS = {
    400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
    409: "conflict", 413: "body-too-large", 415: "unsupported-media-type", 422: "invalid-body",
    500: "internal-error", 503: "unavailable",
}


class Problem(Exception):
    """An HTTP error with a precise, human-readable ``detail``."""

    def __init__(self, status: int, detail: str, *, slug: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail
        self.slug = slug or SLUGS.get(status, "error")
        self.title = title or TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extensions = extensions


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with Chinese kept readable (no ``\\u`` escapes)."""
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def require_role(request: web.Request, *roles: str) -> Principal:
    """403 for a role that may not use this endpoint at all (the endpoint is public knowledge)."""
    who = principal(request)
    if who.role not in roles:
        raise Problem(403, f"role {who.role!r} may not {request.method} {request.match_info.route.resource.canonical}"
                           f" (allowed: {', '.join(roles)})")
    return who
