"""Report templates (报告模板管理) and every version of a report (docs/reports.md).

Templates are read by the centres' people and the admin; written by the admin (the consortium's,
or any centre's) and by a centre lead (``lead: true`` in the consortium file) for his own centre.
Writing never overwrites: each save is a new version, and a report names the version it used.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core import audit
from ...core.auth import Principal
from ...core.consortium import KINDS
from ...workflow import policy, queries, template_store, templates
from ...workflow.errors import WorkflowError
from ...workflow.leases import iso
from ...workflow.service import VERSIONS
from ...workflow.context import settings_of
from ..context import not_found, record, remote, require_role, runtime
from ..problems import Problem, from_workflow, json_response
from ..validation import json_body, known_query, query_choice, query_int

routes = web.RouteTableDef()

READERS = ("reader", "coordinator", "admin")


# --- versions of a report -------------------------------------------------------------------

async def _versions(request: web.Request, who: Principal, doc: dict[str, Any]) -> web.Response:
    versions = await runtime(request).store.find(VERSIONS, {"request_id": doc["id"]}, sort=(("seq", 1),))
    if who.role == "clinic":
        versions = [v for v in versions if v["action"] in policy.RELEASED_VERSIONS]
    await record(request, "report.versions", f"reading/{doc['id']}", organization=doc.get("organization"),
                 detail={"versions": len(versions)})
    return json_response({"request_id": doc["id"], "items": versions})


@routes.get("/api/v1/reading-requests/{request_id}/versions")
async def request_versions(request: web.Request) -> web.Response:
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    request_id = request.match_info["request_id"]
    doc = await queries.get_request(runtime(request).store, request_id)
    if doc is None or not policy.sees_request(who, doc):
        raise await not_found(request, "report.versions", f"reading/{request_id}", f"reading request {request_id!r}")
    return await _versions(request, who, doc)


@routes.get("/api/v1/reports/{report_id}/versions")
async def report_versions(request: web.Request) -> web.Response:
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    report_id = request.match_info["report_id"]
    store = runtime(request).store
    report = await queries.report(store, report_id)
    if report is None or not policy.sees_report(who, report):
        raise await not_found(request, "report.versions", f"report/{report_id}", f"report {report_id!r}")
    doc = await queries.get_request(store, report["request_id"])
    if doc is None:
        raise await not_found(request, "report.versions", f"report/{report_id}", f"report {report_id!r}")
    return await _versions(request, who, doc)


# --- templates ------------------------------------------------------------------------------

def _visible(who: Principal, template: dict[str, Any] | None) -> bool:
    return template is not None and any(templates.visible(template, role=who.role, centre=c)
                                        for c in who.centre_ids or (None,))


def _scope_for(request: web.Request, who: Principal, wanted: Any) -> str:
    """Where ``who`` may write: the admin anywhere, a centre lead only his own centre."""
    rt = runtime(request)
    if who.role == "admin":
        scope = wanted or "consortium"
        if scope != "consortium" and scope not in rt.consortium.centres:
            raise Problem(422, f"scope must be 'consortium' or a centre id, not {scope!r}")
        return scope
    user = rt.consortium.users.get(who.user_id)
    if user is None or not user.lead or who.centre is None:
        raise Problem(403, "only the admin and a centre lead (lead: true) manage report templates")
    if wanted not in (None, who.centre):
        raise Problem(403, f"a centre lead manages only his own centre's templates ({who.centre})")
    return who.centre


async def _write(request: web.Request, who: Principal, body: dict[str, Any], *, template_id: str | None,
                 scope: str, expect: int | None) -> dict[str, Any]:
    rt = runtime(request)
    at = iso(settings_of(rt).now())
    try:
        content = templates.parse({k: v for k, v in body.items() if k not in ("scope", "base_version")},
                                  template_id=template_id)
        async with rt.store.transaction() as tx:
            doc = await template_store.save(tx, content, scope=scope, by=who.user_id, at=at, expect=expect)
            await audit.record(tx, actor=who.user_id, role=who.role, action="template.save",
                               resource=f"report-template/{doc['template_id']}", remote=remote(request),
                               detail={"version": doc["version"], "scope": scope},
                               traceparent=request.headers.get("traceparent"))
    except WorkflowError as exc:
        problem = from_workflow(exc)
        await record(request, "template.save", f"report-template/{template_id or body.get('id')}",
                     outcome="refused", detail={"error": problem.detail})
        raise problem from None
    return doc


@routes.get("/api/v1/report-templates")
async def list_templates(request: web.Request) -> web.Response:
    who = require_role(request, *READERS)
    known_query(request, ("kind", "modality", "body_part"))
    found = await template_store.current(runtime(request).store, kind=query_choice(request, "kind", KINDS),
                                         modality=request.query.get("modality") or None,
                                         body_part=request.query.get("body_part") or None)
    return json_response({"items": [t for t in found if _visible(who, t)]})


@routes.post("/api/v1/report-templates")
async def create_template(request: web.Request) -> web.Response:
    who = require_role(request, *READERS)
    body = await json_body(request)
    scope = _scope_for(request, who, body.get("scope"))
    if await template_store.latest(runtime(request).store, body["id"]) is not None:
        raise Problem(409, f"report template {body['id']!r} exists; PUT a new version of it")
    return json_response(await _write(request, who, body, template_id=None, scope=scope, expect=0), status=201)


async def _template(request: web.Request, who: Principal, number: int | None = None) -> dict[str, Any]:
    tid = request.match_info["template_id"]
    found = await template_store.version(runtime(request).store, tid, number)
    if not _visible(who, found):
        raise Problem(404, f"no report template {tid!r}" + (f" version {number}" if number else ""))
    return found


@routes.get("/api/v1/report-templates/{template_id}")
async def get_template(request: web.Request) -> web.Response:
    who = require_role(request, *READERS)
    known_query(request, ("version",))
    number = query_int(request, "version", 0, 1, 10**6) if request.query.get("version") else None
    found = await _template(request, who, number)
    return json_response({**found, "normal_report": templates.normal_report(found)})


@routes.put("/api/v1/report-templates/{template_id}")
async def update_template(request: web.Request) -> web.Response:
    who = require_role(request, *READERS)
    body = await json_body(request)
    before = await _template(request, who)
    scope = _scope_for(request, who, before["scope"])
    return json_response(await _write(request, who, body, template_id=before["template_id"], scope=scope,
                                      expect=body.get("base_version")))


@routes.get("/api/v1/report-templates/{template_id}/versions")
async def template_versions(request: web.Request) -> web.Response:
    who = require_role(request, *READERS)
    await _template(request, who)
    return json_response({"items": await template_store.versions(runtime(request).store,
                                                                   request.match_info["template_id"])})
