"""Who reaches which studies over DICOMweb: the API's rules (``services.api.scope``) as store filters.

A single study is checked with :func:`services.api.scope.sees_study`; searches need the
whole visible set as a filter:

* admin — everything;
* clinic — its organisation's studies;
* reader, coordinator — the studies behind his centre's reading requests and every other
  study of those patients (priors), from any site;
* auditor and anyone else — nothing (he may not use DICOMweb at all: 403).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...core.auth import Principal
from ...core.store.port import Filter, Store
from ..scope import patient_studies

ROLES = ("clinic", "reader", "coordinator", "admin", "edge")
STORE_ROLES = ("clinic", "admin", "edge")  # who may STOW: the sender of a study, never its reader


@dataclass(frozen=True)
class Scope:
    organization: str | None = None  # only this organisation's studies
    study_uids: frozenset[str] | None = None  # only these studies
    everything: bool = False

    def filter(self, collection: str) -> Filter:
        """The condition a document of ``collection`` must meet to be visible."""
        if self.everything:
            return {}
        if self.organization is not None:
            return {"organization": self.organization}
        field = "id" if collection == "studies" else "study_uid"
        return {field: {"$in": sorted(self.study_uids or ())}}

    def allows(self, study: dict[str, Any]) -> bool:
        if self.everything:
            return True
        if self.organization is not None:
            return study.get("organization") == self.organization
        return study.get("id") in (self.study_uids or ())


def named_studies(matchers: Any, fixed: str | None) -> list[str] | None:
    """The Study Instance UIDs a search is limited to (the path's study, or a single or list UID
    match); None when it may reach any study."""
    if fixed:
        return [fixed]
    for key, m in matchers:
        if key == "StudyInstanceUID":
            if m.kind == "single":
                return [m.values[0]]
            if m.kind == "list" and all(s.kind == "single" for s in m.values):
                return [s.values[0] for s in m.values]
    return None


async def search_scope(store: Store, who: Principal, named: list[str] | None) -> Scope:
    """A search's scope.  One naming its studies (as a viewer opening a study does) checks those
    studies alone (``sees_study``: a few reads) instead of building the reader's whole visible set,
    which costs a read per study of his centre's worklist."""
    if named is not None and who.role in ("reader", "coordinator") and len(named) <= 100:
        from ..scope import sees_study
        visible = []
        for uid in named:
            study = await store.get("studies", uid)
            if study is not None and await sees_study(store, who, study):
                visible.append(uid)
        return Scope(study_uids=frozenset(visible))
    return await scope_of(store, who)


async def scope_of(store: Store, who: Principal) -> Scope:
    if who.role == "admin":
        return Scope(everything=True)
    if who.role in ("clinic", "edge"):  # an edge forwards, and asks what arrived, for its clinic only
        return Scope(organization=who.organization)
    if who.role in ("reader", "coordinator") and who.centre:
        requested = {r["study_uid"] for r in await store.find("reading_requests", {"centre": who.centre_where()})}
        uids = set(requested)
        for study in await store.find("studies", {"id": {"$in": sorted(requested)}}) if requested else []:
            uids.update(s["id"] for s in await patient_studies(store, study))
        return Scope(study_uids=frozenset(uids))
    return Scope(study_uids=frozenset())
