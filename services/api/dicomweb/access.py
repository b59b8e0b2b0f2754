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
