"""Result mutual recognition (结果互认) endpoints: the catalogue, a clinic's look-up of a patient's
still-valid recognised results, and the record of using one instead of repeating the exam.
Orders and reading requests are held by the same rule (``services/workflow/recognition.py``).
See docs/referral.md."""

from __future__ import annotations

from aiohttp import web

from ...workflow import recognition
from ...workflow.errors import WorkflowError
from ..context import record, remote, require_role, runtime
from ..problems import from_workflow, json_response
from ..validation import json_body

routes = web.RouteTableDef()


@routes.get("/api/v1/recognition/items")
async def items(request: web.Request) -> web.Response:
    require_role(request, "clinic", "reader", "coordinator", "admin")
    catalogue = runtime(request).consortium.recognition
    return json_response({"items": [{"id": i.id, "name": i.name, "modality": i.modality, "body_part": i.body_part,
                                     "validity_days": i.validity_days, "mark": i.mark} for i in catalogue],
                          "reasons": recognition.EXCEPTIONS})


@routes.post("/api/v1/recognition/check")
async def check(request: web.Request) -> web.Response:
    """A patient's still-valid recognised results of an exam, before ordering it (audited read)."""
    who = require_role(request, "clinic")
    body = await json_body(request)
    try:
        found = await recognition.check(runtime(request), who, patient_id=body["patient_id"],
                                        resident_id=body.get("resident_id"), modality=body["modality"],
                                        body_part=body.get("body_part"))
    except WorkflowError as exc:
        raise from_workflow(exc) from None
    await record(request, "recognition.check", f"patient/{who.organization}|{body['patient_id']}",
                 organization=who.organization, detail={"prior_uids": [p["study_uid"] for p in found["priors"]]})
    return json_response(found)


@routes.post("/api/v1/recognition/decisions")
async def use_prior(request: web.Request) -> web.Response:
    """The clinic uses a recognised result instead of repeating the exam (a repeat avoided)."""
    who = require_role(request, "clinic")
    body = await json_body(request)
    try:
        decision = await recognition.use_prior(
            runtime(request), who, patient_id=body["patient_id"], resident_id=body.get("resident_id"),
            modality=body["modality"], body_part=body.get("body_part"), prior_study_uid=body["prior_study_uid"],
            remote=remote(request))
    except WorkflowError as exc:
        problem = from_workflow(exc)
        await record(request, "recognition.use_prior", "recognition", organization=who.organization,
                     outcome="not_found" if problem.status == 404 else "refused", detail={"error": problem.detail})
        raise problem from None
    return json_response(decision, status=201)
