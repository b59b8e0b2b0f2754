"""Read side of two-way referral.  Scope is :func:`.service.side` (the API passes the caller)."""

from __future__ import annotations

from typing import Any

from ...core.auth import Principal
from ...core.runtime import Runtime
from .service import REFERRALS, SLOTS, side

Doc = dict[str, Any]


async def get(rt: Runtime, actor: Principal, referral_id: str) -> Doc | None:
    """The referral if ``actor`` may see it (else None: the API answers 404 either way)."""
    doc = await rt.store.get(REFERRALS, referral_id)
    return doc if doc is not None and side(rt, actor, doc) is not None else None


async def visible(rt: Runtime, actor: Principal, *, direction: str | None = None, state: str | None = None,
                  limit: int = 50, offset: int = 0) -> list[Doc]:
    """The referrals ``actor`` sees (raised by or sent to his organisation; all for an admin), newest first."""
    where: dict[str, Any] = {}
    if actor.role != "admin":
        where["$or"] = [{"organization": actor.organization}, {"target_organization": actor.organization}]
    if direction is not None:
        where["direction"] = direction
    if state is not None:
        where["state"] = state
    found = await rt.store.find(REFERRALS, where, sort=(("requested_at", -1), ("id", 1)), limit=5000)
    return [d for d in found if side(rt, actor, d) is not None][offset:offset + limit]


async def trace(rt: Runtime, doc: Doc) -> list[Doc]:
    """Every step of the referral and of its linked up / down referral, with its time, oldest first."""
    docs = [doc]
    for other in (doc.get("parent_id"), doc.get("down_referral_id")):
        if other and (linked := await rt.store.get(REFERRALS, other)):
            docs.append(linked)
    steps = [{**h, "referral_id": d["id"], "direction": d["direction"]} for d in docs for h in d.get("history", [])]
    return sorted(steps, key=lambda s: s["at"])


async def slots(rt: Runtime, *, organization: str | None, department: str | None, day_from: str | None,
                day_to: str | None, state: str | None, limit: int = 200) -> list[Doc]:
    where: dict[str, Any] = {}
    if organization:
        where["organization"] = organization
    if department:
        where["department"] = department
    if state:
        where["state"] = state
    span: dict[str, Any] = {}
    if day_from:
        span["$gte"] = day_from
    if day_to:
        span["$lt"] = day_to
    if span:
        where["start"] = span
    return await rt.store.find(SLOTS, where, sort=(("start", 1), ("id", 1)), limit=limit)
