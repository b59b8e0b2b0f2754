"""Studies held back from ``study.received`` until their edge says they are complete.

A study that comes through a township edge arrives over minutes or hours of a poor link, in
pieces; the quiet period would announce half a study (and a reader would read it).  The first
STOW-RS of an edge for a study writes a hold; the gateway's announcer skips a held study; the
edge's ``complete`` (every instance held by the centre) lifts it.  A later instance of the same
study from the edge holds it again until the edge completes it again.
"""

from __future__ import annotations

from typing import Any

from .store.port import Store

HELD = "held_studies"


async def hold(store: Store, study_uid: str, *, organization: str, edge: str, at: str) -> None:
    async with store.transaction() as tx:
        if await tx.get(HELD, study_uid) is None:
            await tx.insert(HELD, {"id": study_uid, "organization": organization, "edge": edge, "held": True,
                                   "held_at": at, "completed_at": None, "instances": None})
        else:
            await tx.update(HELD, study_uid, {"held": True, "held_at": at}, where={"held": False})


async def release(store: Store, study_uid: str, *, instances: int, at: str) -> bool:
    async with store.transaction() as tx:
        return await tx.update(HELD, study_uid, {"held": False, "completed_at": at, "instances": instances})


async def is_held(store: Store, study: dict[str, Any]) -> bool:
    """Whether ``study`` waits for its edge.  Only a hold by the study's owner counts: another
    organisation's edge cannot keep someone else's study from being announced."""
    doc: dict[str, Any] | None = await store.get(HELD, study["id"])
    return bool(doc and doc.get("held") and doc.get("organization") == study.get("organization"))
