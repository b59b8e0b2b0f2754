"""Read side of the workflow: worklists, requests, reports.  Scope is the caller's job
(the API passes the centre or organisation the principal may see)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.store.port import Store
from .model import OPEN_STATES, PRIORITY_RANK, WORKLIST_SORT, WORKLIST_STATES

Doc = dict[str, Any]


async def worklist(store: Store, *, centre: str | dict[str, Any], kind: str | None = None, modality: str | None = None,
                   priority: str | None = None, origin: str | None = None,
                   state: Sequence[str] | str = WORKLIST_STATES,
                   limit: int = 50, offset: int = 0) -> list[Doc]:
    """A centre's open tasks in worklist order (priority, boosts, deadline); ``centre`` may be
    ``{"$in": [...]}`` (a reader of several centres: one list, in the same order)."""
    where: dict[str, Any] = {"centre": centre}
    if not isinstance(state, str) and set(state) == set(WORKLIST_STATES):
        where["on_worklist"] = True  # the indexed form of the usual question
    else:
        where["state"] = state if isinstance(state, str) else {"$in": list(state)}
    for field, value in (("kind", kind), ("modality", modality), ("priority", priority),
                         ("organization", origin)):
        if value is not None:
            where[field] = value
    sort = WORKLIST_SORT
    if priority in PRIORITY_RANK:
        # Same rows, same order (the rank is then constant), but the worklist index serves it:
        # an unindexed filter makes SQLite walk the whole centre to find a sparse priority.
        where["priority_rank"] = PRIORITY_RANK[priority]
        sort = WORKLIST_SORT[1:]
    return await store.find("reading_requests", where, sort=sort, limit=limit, offset=offset)


async def get_request(store: Store, request_id: str) -> Doc | None:
    return await store.get("reading_requests", request_id)


async def requests_of(store: Store, *, organization: str | None = None, centre: str | dict[str, Any] | None = None,
                      state: Sequence[str] | str | None = None, study_uid: str | None = None,
                      limit: int = 50, offset: int = 0) -> list[Doc]:
    """Requests of an organisation (a clinic's list) or a centre, newest first."""
    where: dict[str, Any] = {}
    if organization is not None:
        where["organization"] = organization
    if centre is not None:
        where["centre"] = centre
    if state is not None:
        where["state"] = state if isinstance(state, str) else {"$in": list(state)}
    if study_uid is not None:
        where["study_uid"] = study_uid
    return await store.find("reading_requests", where, sort=(("requested_at", -1),), limit=limit, offset=offset)


async def open_requests_of_study(store: Store, study_uid: str) -> list[Doc]:
    return await store.find("reading_requests", {"study_uid": study_uid, "state": {"$in": list(OPEN_STATES)}},
                            sort=(("requested_at", 1),))


async def report(store: Store, report_id: str) -> Doc | None:
    return await store.get("reports", report_id)


async def reports_of_study(store: Store, study_uid: str, *, organization: str | None = None,
                           limit: int = 50, offset: int = 0) -> list[Doc]:
    """A study's reports (originals and addenda) in signing order."""
    where: dict[str, Any] = {"study_uid": study_uid}
    if organization is not None:
        where["organization"] = organization
    return await store.find("reports", where, sort=(("signed_at", 1),), limit=limit, offset=offset)


async def reports_of(store: Store, *, organization: str | None = None, centre: str | dict[str, Any] | None = None,
                     limit: int = 50, offset: int = 0) -> list[Doc]:
    """Reports of an organisation (a clinic's results) or a centre, newest first."""
    where: dict[str, Any] = {}
    if organization is not None:
        where["organization"] = organization
    if centre is not None:
        where["centre"] = centre
    return await store.find("reports", where, sort=(("signed_at", -1),), limit=limit, offset=offset)
