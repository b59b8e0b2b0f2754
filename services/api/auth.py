"""Authentication middleware: a bearer JWT on every request but the public paths.

The token is verified by :func:`services.core.auth.verify_token` (signature, expiry, user
still configured with that role) and checked against ``revoked_tokens`` on every request,
so a revocation takes effect on the very next call.  The caller becomes
``request[PRINCIPAL]``; the client address for the audit trail is :func:`remote_of`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ..core.auth import AuthError, Principal, is_revoked, verify_token
from ..core.runtime import Runtime
from .problems import Problem

PRINCIPAL = web.RequestKey("principal", Principal)
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/api/v1/openapi.json",
                          "/metrics", "/dashboard"})  # aggregates, and a page with no data

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def unauthorized(why: str) -> Problem:
    return Problem(401, why, headers={
        "WWW-Authenticate": f'Bearer realm="yilian", error="invalid_token", error_description="{why}"'})


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise unauthorized("missing Authorization: Bearer token")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


def auth_middleware(rt: Runtime) -> Any:
    secret: list[str] = []  # read once: in the embedded default it is a file under the data dir

    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or request.method == "OPTIONS":
            return await handler(request)
        token = bearer(request)
        if not secret:
            secret.append(rt.settings.secret())
        try:
            principal = verify_token(token, secret[0], rt.consortium)
        except AuthError as exc:
            raise unauthorized(str(exc).replace('"', "'")) from None
        if await is_revoked(rt.store, principal.token_id):
            raise unauthorized("token revoked")
        request[PRINCIPAL] = principal
        return await handler(request)

    return authenticate


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """``"10.0.0.1, 192.168.0.0/24"`` -> networks; a bad entry is a startup error."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    try:
        return tuple(ipaddress.ip_network(t, strict=False) for t in items)
    except ValueError as exc:
        raise SystemExit(f"YILIAN_TRUSTED_PROXIES: {exc}") from None


def _trusted(address: str | None, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def remote_of(request: web.Request, proxies: tuple[Network, ...]) -> str | None:
    """The client address: the peer, or — only when the peer is a trusted proxy — the
    right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy."""
    peer = request.remote
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer
