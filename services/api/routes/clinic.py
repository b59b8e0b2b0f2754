"""Clinic views: its studies with their requests' states, its requests, its results."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncio
import base64

from aiohttp import web

from ...delivery.ca import CAError, trusted_roots_pem
from ...delivery.service import SIGNED_PDFS
from ...delivery.verification import roots_from_pem, verify
from ...pacs_gateway.refusals import COLLECTION as REFUSALS
from ...workflow import queries
from ...workflow.model import STATES
from ...workflow.policy import request_view, sees_report, sees_request
from ..context import not_found, page, record, require_role, runtime
from ..problems import Problem, json_response
from ..scope import shown
from ..validation import known_query, query_choice, query_int

routes = web.RouteTableDef()

# What the clinic's list of its studies shows of each request (the clinic's desk: state, and a
# re-scan's reason from ``return``); the whole request is GET /reading-requests/{id}.
REQUEST_SUMMARY = ("id", "state", "kind", "priority", "centre", "deadline", "requested_at", "clinical_question",
                   "green_channel", "signed_resident", "return")


@routes.get("/api/v1/studies")
async def list_studies(request: web.Request) -> web.Response:
    who = require_role(request, "clinic", "admin")
    known_query(request, ("limit", "offset", "patient_id"))
    limit, offset = query_int(request, "limit", 50, 1, 500), query_int(request, "offset", 0, 0, 10**9)
    where: dict[str, Any] = {} if who.role == "admin" else {"organization": who.organization}
    if patient_id := request.query.get("patient_id"):
        where["patient_id"] = patient_id
    store = runtime(request).store
    studies = await store.find("studies", where, sort=(("last_update_at", -1), ("id", 1)), limit=limit,
                               offset=offset)
    by_study: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if studies:
        found = await store.find("reading_requests", {"study_uid": {"$in": [s["id"] for s in studies]}},
                                 sort=(("requested_at", 1),))
        for r in found:
            if sees_request(who, r):
                by_study[r["study_uid"]].append({k: r.get(k) for k in REQUEST_SUMMARY})
    items = [{**shown(s, who), "reading_requests": by_study.get(s["id"], [])} for s in studies]
    await record(request, "study.list", "studies", organization=where.get("organization"),
                 detail={"study_uids": [s["id"] for s in studies]})
    return json_response(page(items, limit, offset))


@routes.get("/api/v1/gateway/refusals")
async def gateway_refusals(request: web.Request) -> web.Response:
    """What the gateway turned away from the clinic's modalities (C-STOREs refused with their status
    and Error Comment) or set aside in quarantine after Success, newest first."""
    who = require_role(request, "clinic", "admin")
    known_query(request, ("kind", "organization", "limit", "offset"))
    limit, offset = query_int(request, "limit", 50, 1, 500), query_int(request, "offset", 0, 0, 10**9)
    where: dict[str, Any] = {}
    if who.role == "clinic":
        where["organization"] = who.organization
    elif organization := request.query.get("organization"):
        where["organization"] = organization
    if kind := query_choice(request, "kind", ("refused", "quarantined")):
        where["kind"] = kind
    items = await runtime(request).store.find(REFUSALS, where, sort=(("at", -1), ("id", 1)), limit=limit,
                                              offset=offset)
    await record(request, "gateway.refusals", "gateway/refusals", organization=where.get("organization"),
                 detail={"count": len(items)})
    return json_response(page(items, limit, offset))


@routes.get("/api/v1/reading-requests")
async def list_requests(request: web.Request) -> web.Response:
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    known_query(request, ("state", "study_uid", "limit", "offset"))
    limit, offset = query_int(request, "limit", 50, 1, 500), query_int(request, "offset", 0, 0, 10**9)
    scope: dict[str, Any] = {}
    if who.role == "clinic":
        scope["organization"] = who.organization
    elif who.role in ("reader", "coordinator"):
        scope["centre"] = who.centre_where()
    items = await queries.requests_of(runtime(request).store, **scope, state=query_choice(request, "state", STATES),
                                      study_uid=request.query.get("study_uid") or None, limit=limit, offset=offset)
    await record(request, "reading.list", "reading-requests", organization=scope.get("organization"),
                 detail={"request_ids": [r["id"] for r in items], **scope})
    return json_response(page([request_view(who, r) for r in items], limit, offset))


@routes.get("/api/v1/reading-requests/{request_id}")
async def get_request(request: web.Request) -> web.Response:
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    request_id = request.match_info["request_id"]
    doc = await queries.get_request(runtime(request).store, request_id)
    if doc is None or not sees_request(who, doc):
        raise await not_found(request, "reading.read", f"reading/{request_id}", f"reading request {request_id!r}")
    await record(request, "reading.read", f"reading/{request_id}", organization=doc.get("organization"))
    return json_response(request_view(who, doc))


@routes.get("/api/v1/reports")
async def list_reports(request: web.Request) -> web.Response:
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    known_query(request, ("study_uid", "limit", "offset"))
    limit, offset = query_int(request, "limit", 50, 1, 500), query_int(request, "offset", 0, 0, 10**9)
    store = runtime(request).store
    organization = who.organization if who.role == "clinic" else None
    centre = who.centre_where() if who.role in ("reader", "coordinator") else None
    if study_uid := request.query.get("study_uid"):
        items = [r for r in await queries.reports_of_study(store, study_uid, organization=organization,
                                                           limit=limit, offset=offset) if sees_report(who, r)]
    else:
        items = await queries.reports_of(store, organization=organization, centre=centre, limit=limit, offset=offset)
    await record(request, "report.list", "reports", organization=organization,
                 detail={"report_ids": [r["id"] for r in items]})
    return json_response(page(items, limit, offset))


@routes.get("/api/v1/reports/{report_id}")
async def get_report(request: web.Request) -> web.Response:
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    report_id = request.match_info["report_id"]
    doc = await queries.report(runtime(request).store, report_id)
    if doc is None or not sees_report(who, doc):
        raise await not_found(request, "report.read", f"report/{report_id}", f"report {report_id!r}")
    await record(request, "report.read", f"report/{report_id}", organization=doc.get("organization"))
    return json_response(doc)



@routes.get("/api/v1/reports/{report_id}/document")
async def report_document(request: web.Request) -> web.Response:
    """The report's signed PDF, the very bytes a terminal gets by DICOM: for a clinic without a DICOM SCP
    (its HIS or a browser fetches it after the inbox or the webhook said the result is there)."""
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    report_id = request.match_info["report_id"]
    rt = runtime(request)
    doc = await queries.report(rt.store, report_id)  # released reports only: a submitted one is not there yet
    if doc is None or not sees_report(who, doc):
        raise await not_found(request, "report.document", f"report/{report_id}", f"report {report_id!r}")
    kept = await rt.store.get(SIGNED_PDFS, report_id)
    if kept is None:
        await record(request, "report.document", f"report/{report_id}", organization=doc.get("organization"),
                     outcome="not_found")
        raise Problem(404, f"report {report_id!r} has no signed PDF yet: the delivery service makes it within "
                           "seconds of the release (try again shortly)")
    await record(request, "report.document", f"report/{report_id}", organization=doc.get("organization"),
                 detail={"sha256": kept.get("sha256"), "report_version": kept.get("report_version")})
    return web.Response(body=base64.b64decode(kept["pdf"]), content_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{report_id}.pdf"', "ETag": f'"{kept.get("sha256")}"',
        "Cache-Control": "private, no-store"})


@routes.get("/api/v1/reports/{report_id}/verification")
async def report_verification(request: web.Request) -> web.Response:
    """Who signed the report's delivered PDF, when, with which certificate, and whether it is intact."""
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    report_id = request.match_info["report_id"]
    rt = runtime(request)
    doc = await queries.report(rt.store, report_id)
    if doc is None or not sees_report(who, doc):
        raise await not_found(request, "report.verify", f"report/{report_id}", f"report {report_id!r}")
    kept = await rt.store.get(SIGNED_PDFS, report_id)
    if kept is None:
        await record(request, "report.verify", f"report/{report_id}", organization=doc.get("organization"),
                     outcome="not_found")
        raise Problem(404, f"report {report_id!r} has no signed PDF yet: it is made at the first DICOM delivery "
                           "of the report to the clinic's terminal")
    try:
        roots = roots_from_pem(*trusted_roots_pem(rt.settings.data_dir))
    except CAError as exc:
        raise Problem(503, str(exc)) from None
    pdf = base64.b64decode(kept["pdf"])
    checked = await asyncio.to_thread(verify, pdf, roots)
    body = {"report_id": report_id, "report_version": kept.get("report_version"),
            "pdf_sop_instance_uid": kept.get("pdf_sop_instance_uid"),
            "sr_sop_instance_uid": kept.get("sr_sop_instance_uid"), "signed_by": kept.get("signer_id"),
            "made_at": kept.get("signed_at"), "signature": kept.get("signature"),
            # the digest recorded when it was signed: the stored copy must still match it
            "recorded_sha256": kept.get("sha256"), **checked}
    body["valid"] = bool(checked["valid"] and checked["sha256"] == kept.get("sha256"))
    await record(request, "report.verify", f"report/{report_id}", organization=doc.get("organization"),
                 detail={"valid": body["valid"]})
    return json_response(body)
