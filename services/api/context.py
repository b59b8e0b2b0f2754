"""Per-request helpers the route handlers share: who calls, from where, may he, audit it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..core.http import RUNTIME, Problem, principal, require_role, runtime
from ..core.users import UserDirectory
from .auditing import AuditWriter
from .auth import Network, remote_of

__all__ = ["AUDIT", "CLOCK", "DIRECTORY", "RUNTIME", "TRUSTED_PROXIES", "not_found", "page", "principal", "record", "remote",
           "require_role", "runtime"]

TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)
AUDIT = web.AppKey("audit", AuditWriter)
DIRECTORY = web.AppKey("directory", UserDirectory)  # the users: the file's with an admin's changes
CLOCK = web.AppKey("clock", Callable[[], float])  # wall clock of sessions and sign-in throttling (tests drive it)


def remote(request: web.Request) -> str | None:
    proxies: tuple[Network, ...] = request.app.get(TRUSTED_PROXIES, ())
    return remote_of(request, proxies)


async def record(request: web.Request, action: str, resource: str, *, organization: str | None = None,
                 outcome: str = "success", detail: dict[str, Any] | None = None) -> None:
    """One audit record for a read (or refused access) of patient data; returns once it is committed."""
    who = principal(request)
    await request.app[AUDIT].record(actor=who.user_id, role=who.role, action=action, resource=resource,
                                    organization=organization, outcome=outcome, remote=remote(request),
                                    detail=detail, traceparent=request.headers.get("traceparent"))


async def not_found(request: web.Request, action: str, resource: str, what: str) -> Problem:
    """Audit a refused or failed lookup and build the 404 (the same whether absent or out of scope)."""
    await record(request, action, resource, outcome="not_found")
    return Problem(404, f"no {what}")


def page(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "limit": limit, "offset": offset,
            "next_offset": offset + limit if len(items) == limit else None}
