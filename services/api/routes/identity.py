"""Patient identity across the consortium (EMPI): suggested and confirmed links (docs/identity.md).

Name + birth date never merge two organisations' patients (``api/scope.py``); they only
*suggest* a link to a coordinator or an admin, who confirms it.  A confirmed link (two
``identity_links`` documents, one each way) makes the two local patients one for priors
(结果互认); every suggestion read and every confirmation is audited.  Two patients carrying
different valid national identifiers are never linked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ..context import not_found, principal, record, require_role, runtime
from ..problems import Problem, json_response
from ..scope import linked_patients, patient_key, same_patient, sees_study, shown
from ..validation import json_body

routes = web.RouteTableDef()

ROLES = ("coordinator", "admin")
BASE = "/api/v1/studies/{study_uid}"


async def _study(request: web.Request, action: str) -> dict[str, Any]:
    """The study, if the caller sees it (404 alike for absent and out of scope), and may link (403)."""
    who = require_role(request, "clinic", "reader", *ROLES)
    uid = request.match_info["study_uid"]
    store = runtime(request).store
    study = await store.get("studies", uid)
    if study is None or not await sees_study(store, who, study):
        raise await not_found(request, action, f"study/{uid}", f"study {uid!r}")
    if who.role not in ROLES:
        await record(request, action, f"study/{uid}", outcome="forbidden")
        raise Problem(403, f"role {who.role!r} may not link patients (coordinator or admin)")
    return study


def _patients(studies: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for s in studies:
        if s.get("patient_id"):
            by_patient.setdefault(patient_key(s), []).append(s)
    return by_patient


@routes.get(BASE + "/identity-suggestions")
async def suggestions(request: web.Request) -> web.Response:
    """Other organisations' patients with the same name (any case) and birth date, not yet the same patient."""
    study = await _study(request, "identity.suggestions")
    who, store = principal(request), runtime(request).store
    items: list[dict[str, Any]] = []
    name_key = study.get("patient_name_key") or (study.get("patient_name") or "").upper()
    if name_key.strip("^ ") and study.get("birth_date"):
        known = {patient_key(s) for s in await store.find("studies", same_patient(
            study, await linked_patients(store, study)), limit=500)}
        found = await store.find("studies", {"patient_name_key": name_key, "birth_date": study["birth_date"]},
                                 sort=(("organization", 1), ("patient_id", 1)), limit=500)
        for key, studies in _patients(found).items():
            first = studies[0]
            if key in known or first.get("organization") == study.get("organization"):
                continue
            items.append({"organization": first["organization"], "patient_id": first["patient_id"],
                          "patient_name": first.get("patient_name"), "birth_date": first.get("birth_date"),
                          "identity": shown(first, who).get("identity"),
                          "study_uids": [s["id"] for s in studies], "reason": "same name and birth date"})
    await record(request, "identity.suggestions", f"study/{study['id']}", organization=study.get("organization"),
                 detail={"suggested": [f"{i['organization']}|{i['patient_id']}" for i in items]})
    return json_response({"items": items})


@routes.post(BASE + "/identity-links")
async def confirm(request: web.Request) -> web.Response:
    """A person confirms that the study's patient and another organisation's patient are one."""
    study = await _study(request, "identity.link")
    body = await json_body(request)
    who, store = principal(request), runtime(request).store
    resource = f"study/{study['id']}"
    other = {"organization": body["organization"], "patient_id": body["patient_id"]}
    theirs = await store.find("studies", other, limit=1)
    if not study.get("patient_id") or not theirs:
        raise await not_found(request, "identity.link", resource,
                              f"patient {body['patient_id']!r} at {body['organization']!r}")
    here, there = patient_key(study), patient_key(theirs[0])
    if here == there:
        raise Problem(422, "a patient is always linked to itself")
    mine = study.get("identity") or ""
    yours = theirs[0].get("identity") or ""
    if mine and yours and mine != yours:
        await record(request, "identity.link", resource, organization=study.get("organization"), outcome="refused",
                     detail={"patients": [here, there], "error": "different national identifiers"})
        raise Problem(409, "the two patients carry different national identifiers: never the same person",
                      slug="identity-conflict")
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    link = {"confirmed_by": who.user_id, "role": who.role, "confirmed_at": now, "reason": body.get("reason", "")}
    async with store.transaction() as tx:  # idempotent: the same two documents whoever confirms again
        await tx.put("identity_links", {"id": f"{here}>{there}", "patient": here, "linked": there, **link})
        await tx.put("identity_links", {"id": f"{there}>{here}", "patient": there, "linked": here, **link})
    await record(request, "identity.link", resource, organization=study.get("organization"),
                 detail={"patients": [here, there], "reason": body.get("reason", "")})
    return json_response({"patient": here, "linked": there, **link}, status=201)


@routes.delete(BASE + "/identity-links/{organization}/{patient_id}")
async def unlink(request: web.Request) -> web.Response:
    """A person undoes a confirmed link (a mistaken confirmation): both documents go in one transaction,
    so priors stop following it at once (every read of priors reads the links)."""
    study = await _study(request, "identity.unlink")
    who, store = principal(request), runtime(request).store
    resource = f"study/{study['id']}"
    here = patient_key(study) if study.get("patient_id") else ""
    there = f"{request.match_info['organization']}|{request.match_info['patient_id']}"
    link = await store.get("identity_links", f"{here}>{there}") if here else None
    if link is None:
        raise await not_found(request, "identity.unlink", resource, f"link to patient {there!r}")
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    async with store.transaction() as tx:
        await tx.delete("identity_links", f"{here}>{there}")
        await tx.delete("identity_links", f"{there}>{here}")
    await record(request, "identity.unlink", resource, organization=study.get("organization"),
                 detail={"patients": [here, there], "confirmed_by": link.get("confirmed_by"),
                         "confirmed_at": link.get("confirmed_at")})
    return json_response({"patient": here, "linked": there, "unlinked_by": who.user_id, "unlinked_at": now})
