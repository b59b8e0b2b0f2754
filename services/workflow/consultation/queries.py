"""Read side of remote consultation.  Scope is the caller's job (the API passes the
organisation, centre or specialist the principal may see)."""

from __future__ import annotations

from typing import Any

from ...core.store.port import Store
from .service import CONSULTATIONS, INVITATIONS, NOTES

Doc = dict[str, Any]


async def get(store: Store, consultation_id: str) -> Doc | None:
    return await store.get(CONSULTATIONS, consultation_id)


async def of_organization(store: Store, organization: str | None, *, state: str | None = None,
                          limit: int = 50, offset: int = 0) -> list[Doc]:
    """A clinic's consultations (``None``: everybody's, for an admin), newest first."""
    where: dict[str, Any] = {}
    if organization is not None:
        where["organization"] = organization
    if state is not None:
        where["state"] = state
    return await store.find(CONSULTATIONS, where, sort=(("requested_at", -1),), limit=limit, offset=offset)


async def of_centre(store: Store, centre: str, *, state: str | None = None, limit: int = 50,
                    offset: int = 0) -> list[Doc]:
    """A coordinating centre's consultations, newest first."""
    where: dict[str, Any] = {"centre": centre}
    if state is not None:
        where["state"] = state
    return await store.find(CONSULTATIONS, where, sort=(("requested_at", -1),), limit=limit, offset=offset)


async def of_specialist(store: Store, specialist: str, *, state: str | None = None, since: str | None = None,
                        limit: int = 50, offset: int = 0) -> list[Doc]:
    """The consultations a specialist is invited to, by slot (``since``: slots starting after it)."""
    where: dict[str, Any] = {"specialist": specialist}
    if since is not None:
        where["slot_start"] = {"$gte": since}
    invitations = await store.find(INVITATIONS, where, sort=(("slot_start", 1),), limit=None)
    docs = [d for d in [await store.get(CONSULTATIONS, i["consultation_id"]) for i in invitations]
            if d is not None and (state is None or d["state"] == state)]
    return docs[offset:offset + limit]


async def notes(store: Store, consultation_id: str) -> list[Doc]:
    return await store.find(NOTES, {"consultation_id": consultation_id}, sort=(("seq", 1),))
