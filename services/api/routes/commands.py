"""Workflow commands: parse the validated body, build the command, hand it to ``execute``.

``execute`` checks role and scope and writes the change, its events and its audit record in
one transaction; a refused command changes nothing and is audited here with its outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ...workflow import commands as c
from ...workflow.errors import WorkflowError
from ...workflow.service import execute
from ..context import record, remote, require_role, runtime
from ..problems import from_workflow, json_response
from ..validation import json_body

routes = web.RouteTableDef()

OUTCOMES = {404: "not_found", 403: "forbidden", 409: "conflict", 422: "invalid"}


async def run_command(request: web.Request, action: str, resource: str,
                      build: Callable[[dict[str, Any]], Any], *,
                      roles: tuple[str, ...] = ("clinic", "reader", "coordinator", "admin"), status: int = 200,
                      present: Callable[[dict[str, Any]], Any] | None = None,
                      executor: Callable[..., Any] = execute,
                      status_of: Callable[[dict[str, Any]], int] | None = None) -> web.Response:
    """One workflow command from a request (reading, consultation and order routes alike): the
    caller's role, the validated body, ``executor`` (the workflow's ``execute``, or the
    consultation service's); a refusal audited with its outcome."""
    who = require_role(request, *roles)
    body = await json_body(request)
    try:
        result = await executor(runtime(request), build(body), actor=who, remote=remote(request))
    except WorkflowError as exc:
        problem = from_workflow(exc)
        await record(request, action, resource, outcome=OUTCOMES.get(problem.status, "refused"),
                     detail={"error": problem.detail})
        raise problem from None
    return json_response(present(result) if present else result,
                         status=status_of(result) if status_of else status)


def _rid(request: web.Request) -> str:
    return request.match_info["request_id"]


@routes.post("/api/v1/reading-requests")
async def create(request: web.Request) -> web.Response:
    return await run_command(request, "reading.request", "reading-requests", lambda b: c.RequestReading(
        study_uid=b["study_uid"], kind=b["kind"], priority=b["priority"], clinical_question=b["clinical_question"],
        green_channel=b.get("green_channel"), signed_resident=b.get("signed_resident", False),
        record_class=b.get("record_class"), recognition=b.get("recognition")), status=201)


@routes.post("/api/v1/reading-requests/{request_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "reading.cancel", f"reading/{rid}", lambda b: c.CancelReading(rid, b["reason"]))


@routes.post("/api/v1/reading-requests/{request_id}/claim")
async def claim(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "reading.claim", f"reading/{rid}", lambda b: c.Claim(rid))


@routes.post("/api/v1/reading-requests/{request_id}/renew")
async def renew(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "reading.renew", f"reading/{rid}", lambda b: c.RenewLease(rid))


@routes.post("/api/v1/reading-requests/{request_id}/release")
async def release(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "reading.release", f"reading/{rid}", lambda b: c.Release(rid))


@routes.put("/api/v1/reading-requests/{request_id}/draft")
async def draft(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "reading.draft", f"reading/{rid}", lambda b: c.SaveDraft(
        rid, b["findings"], b["impression"], b.get("critical", False), b.get("critical_category"),
        **_template(b)))


def _template(b: dict[str, Any]) -> dict[str, Any]:
    return {"template_id": b.get("template_id"), "template_version": b.get("template_version"),
            "fields": b.get("fields")}


@routes.post("/api/v1/reading-requests/{request_id}/sign")
async def sign(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "report.sign", f"reading/{rid}", lambda b: c.Sign(
        rid, b.get("findings"), b.get("impression"), b.get("critical"), b.get("critical_category"), **_template(b),
        quality=b.get("quality")))


@routes.put("/api/v1/reading-requests/{request_id}/review")
async def review(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "report.review", f"reading/{rid}", lambda b: c.Review(
        rid, b.get("findings"), b.get("impression"), b.get("critical"), b.get("critical_category"), **_template(b)))


@routes.post("/api/v1/reading-requests/{request_id}/countersign")
async def countersign(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "report.countersign", f"reading/{rid}", lambda b: c.Review(
        rid, b.get("findings"), b.get("impression"), b.get("critical"), b.get("critical_category"), **_template(b),
        release=True))


@routes.post("/api/v1/reading-requests/{request_id}/send-back")
async def send_back(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "report.send_back", f"reading/{rid}", lambda b: c.SendBack(rid, b["comment"]))


@routes.post("/api/v1/reading-requests/{request_id}/escalate")
async def escalate(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "reading.escalate", f"reading/{rid}", lambda b: c.Escalate(rid, b["reason"]))


@routes.post("/api/v1/reading-requests/{request_id}/return")
async def return_for_rescan(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "reading.return", f"reading/{rid}",
                      lambda b: c.ReturnForRescan(rid, b["reason_code"], b.get("comment", ""),
                                                  tuple(b.get("quality_reasons", ()))))


@routes.post("/api/v1/reading-requests/{request_id}/move")
async def move(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "reading.move", f"reading/{rid}", lambda b: c.MoveToCentre(rid, b["centre"], b["reason"]))


@routes.post("/api/v1/reading-requests/{request_id}/assign")
async def assign(request: web.Request) -> web.Response:
    rid = _rid(request)
    return await run_command(request, "reading.assign", f"reading/{rid}",
                      lambda b: c.AssignToReader(rid, b["reader_id"], b["reason"]))

@routes.post("/api/v1/reports/{report_id}/addenda")
async def addendum(request: web.Request) -> web.Response:
    report_id = request.match_info["report_id"]
    # 201 with the addendum; 202 with the reading request when a junior's addendum waits for review.
    return await run_command(request, "report.addendum", f"report/{report_id}",
                      lambda b: c.Addendum(report_id, b["text"]), status=201,
                      status_of=lambda done: 202 if done.get("pending_addendum") else 201)


@routes.put("/api/v1/reports/{report_id}/addenda/review")
async def review_addendum(request: web.Request) -> web.Response:
    report_id = request.match_info["report_id"]
    return await run_command(request, "report.addendum_review", f"report/{report_id}",
                             lambda b: c.ReviewAddendum(report_id, b.get("text")))


@routes.post("/api/v1/reports/{report_id}/addenda/countersign")
async def countersign_addendum(request: web.Request) -> web.Response:
    report_id = request.match_info["report_id"]
    return await run_command(request, "report.addendum_countersign", f"report/{report_id}",
                             lambda b: c.ReviewAddendum(report_id, b.get("text"), release=True), status=201)


@routes.post("/api/v1/reports/{report_id}/addenda/send-back")
async def send_back_addendum(request: web.Request) -> web.Response:
    report_id = request.match_info["report_id"]
    return await run_command(request, "report.addendum_send_back", f"report/{report_id}",
                             lambda b: c.SendBackAddendum(report_id, b["comment"]))
