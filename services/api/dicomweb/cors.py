"""CORS (Fetch standard) so a viewer served from another origin (OHIF) can call the server.

Origins come from ``YILIAN_CORS_ORIGINS`` (comma-separated; ``*`` allows any); unset, no
origin is allowed and no CORS header is ever sent.  A preflight ``OPTIONS`` is answered
here, before authentication (browsers never send credentials on a preflight).  Actual
responses — errors included — carry the allow-origin header and expose the headers a
DICOMweb client reads.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Accept"
EXPOSE_HEADERS = "Content-Type, Content-Length, Content-Location, Location, Warning, WWW-Authenticate"
MAX_AGE = "600"
ORIGIN = web.RequestKey("cors_origin", str)


def allowed_origin(origin: str | None, origins: tuple[str, ...]) -> str | None:
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


def cors_middleware(origins: tuple[str, ...]) -> Any:
    @web.middleware
    async def cors(request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = allowed_origin(origin, origins)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if allowed is None:
                return web.Response(status=403, text="origin not allowed")
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": allowed, "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS, "Access-Control-Max-Age": MAX_AGE,
                "Vary": "Origin"})
        if allowed is not None:
            request[ORIGIN] = allowed  # on_prepare adds the headers, streamed responses too
        return await handler(request)

    return cors


def _decorate(response: web.StreamResponse, allowed: str) -> None:
    response.headers["Access-Control-Allow-Origin"] = allowed
    response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    response.headers.add("Vary", "Origin")


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Every response (errors and streamed ones included) as it is sent: aiohttp's ``on_response_prepare``."""
    allowed = request.get(ORIGIN)
    if allowed and "Access-Control-Allow-Origin" not in response.headers:
        _decorate(response, allowed)
