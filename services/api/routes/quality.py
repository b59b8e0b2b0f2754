"""Image quality grading (影像质控) and peer review of signed reports (docs/quality.md).

Grading and the peer-review commands run through the workflow's ``execute`` (one transaction
with the event and the audit record); the rates and review figures are read here, in scope:
a clinic sees its own organisation's quality with the readers' comments, the centres all;
a reader sees only his own peer-review figures.
"""

from __future__ import annotations

from aiohttp import web

from ...core.localtime import LocalTime
from ...workflow import commands as c
from ...workflow.quality import model, queries
from ..context import record, require_role, runtime
from ..problems import Problem, json_response
from ..validation import known_query, query_choice
from .commands import run_command

routes = web.RouteTableDef()

COMMENT_FIELDS = ("reading_id", "study_instance_uid", "modality", "operators", "grade", "label", "reasons",
                  "comment", "reader_name", "centre", "graded_at")


@routes.put("/api/v1/reading-requests/{request_id}/quality")
async def grade(request: web.Request) -> web.Response:
    rid = request.match_info["request_id"]
    return await run_command(request, "quality.grade", f"reading/{rid}", lambda b: c.GradeQuality(
        rid, b["grade"], tuple(b.get("reasons", ())), b.get("comment", "")))


def _month(request: web.Request, name: str) -> str | None:
    value = request.query.get(name) or None
    if value is not None and not queries.MONTH.match(value):
        raise Problem(422, f"query parameter {name!r} must be a month YYYY-MM, not {value!r}", slug="invalid-query")
    return value


@routes.get("/api/v1/quality/rates")
async def rates(request: web.Request) -> web.Response:
    """甲片率 and 废片率 per site × modality × technician × month; a clinic its own, with comments."""
    who = require_role(request, "clinic", "reader", "coordinator", "admin")
    known_query(request, ("organization", "modality", "operator", "from", "to"))
    rt = runtime(request)
    organization = query_choice(request, "organization")
    if who.role == "clinic":
        if organization not in (None, who.organization):
            raise Problem(403, f"a clinic sees only its own organisation's image quality ({who.organization})")
        organization = who.organization
    local = LocalTime.named(rt.consortium.timezone)
    found = await queries.gradings(rt.store, local, organization=organization,
                                   modality=query_choice(request, "modality"),
                                   operator=query_choice(request, "operator"),
                                   since=_month(request, "from"), until=_month(request, "to"))
    body = {"scale": [{"code": g.code, "label": g.label, "reject": g.reject} for g in rt.consortium.quality.scale],
            "items": queries.rates(rt.consortium, local, found),
            # the readers' comments on what was not 甲: what the township should change
            "comments": [{k: g.get(k) for k in COMMENT_FIELDS} | {"graded_at_local": local.iso(g["graded_at"])}
                         for g in found if g["grade"] != rt.consortium.quality.scale[0].code]}
    await record(request, "quality.rates", "quality", organization=organization,
                 detail={"gradings": len(found)})
    return json_response(body)


@routes.get("/api/v1/peer-reviews")
async def reviews(request: web.Request) -> web.Response:
    who = require_role(request, "reader", "coordinator", "admin")
    known_query(request, ("state",))
    rt = runtime(request)
    items = await queries.reviews(rt.store, rt.consortium, who,
                                  state=query_choice(request, "state", model.REVIEW_STATES))
    await record(request, "peer_review.list", "peer-reviews", detail={"reviews": [r["id"] for r in items]})
    return json_response({"items": items})


@routes.get("/api/v1/peer-reviews/stats")
async def stats(request: web.Request) -> web.Response:
    who = require_role(request, "reader", "coordinator", "admin")
    known_query(request, ())
    rt = runtime(request)
    body = await queries.review_stats(rt.store, rt.consortium, who)
    await record(request, "peer_review.stats", "peer-reviews")
    return json_response(body)


@routes.post("/api/v1/peer-reviews/{review_id}/assign")
async def assign(request: web.Request) -> web.Response:
    review_id = request.match_info["review_id"]
    return await run_command(request, "peer_review.assign", f"peer-review/{review_id}",
                             lambda b: c.AssignPeerReview(review_id, b["reviewer"]), roles=("coordinator", "admin"))


@routes.post("/api/v1/peer-reviews/{review_id}/score")
async def score(request: web.Request) -> web.Response:
    review_id = request.match_info["review_id"]
    return await run_command(request, "peer_review.score", f"peer-review/{review_id}", lambda b: c.ScorePeerReview(
        review_id, b["score"], b.get("clinically_significant", False), b.get("comment", "")), roles=("reader",))


@routes.post("/api/v1/peer-reviews/{review_id}/arbitrate")
async def arbitrate(request: web.Request) -> web.Response:
    review_id = request.match_info["review_id"]
    return await run_command(request, "peer_review.arbitrate", f"peer-review/{review_id}",
                             lambda b: c.ArbitratePeerReview(review_id, b["upheld"], b.get("comment", ""),
                                                             b.get("addendum")), roles=("reader",))
