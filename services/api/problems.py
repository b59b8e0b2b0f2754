"""Errors as ``application/problem+json`` (RFC 9457): type, title, status, detail, instance.

Handlers raise :class:`~services.core.http.Problem` (or a workflow error, mapped here); the middleware turns
every failure, including aiohttp's own 404/405/413, into one problem document.  What aiohttp's
parser refuses before any handler runs (a bad request line, a bad header) is answered the same
way by :class:`ProblemRequestHandler`, and logged in one line.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..core.http import CONTENT_TYPE, TYPE_PREFIX, Problem, dumps, json_response

__all__ = ["CONTENT_TYPE", "Problem", "json_response", "problem_middleware", "problem_response", "unparsable",
           "ProblemAppRunner"]

log = logging.getLogger("yilian.api")


def problem_response(request: web.BaseRequest | None, problem: Problem) -> web.Response:
    """``request`` None: no request was parsed, so there is no ``instance`` to name."""
    body = {"type": TYPE_PREFIX + problem.slug, "title": problem.title, "status": problem.status,
            "detail": problem.detail, **({"instance": request.path} if request is not None else {}),
            **problem.extensions}
    return web.Response(status=problem.status, text=dumps(body), content_type=CONTENT_TYPE,
                        headers=problem.headers)


def unparsable(exc: HttpProcessingError) -> Problem:
    """aiohttp's parser refused the request line, a header, or a multipart part: the client's
    fault (400, or 413 for what is too large), said in one line."""
    status = exc.code if 400 <= exc.code < 500 else 400
    why = (exc.message or type(exc).__name__).splitlines()[0].strip().rstrip(":")
    return Problem(status, f"unparsable request: {why}", slug="unparsable-request")


def log_unparsable(request: web.BaseRequest, problem: Problem, *, parsed: bool = True,
                   level: int = logging.WARNING) -> None:
    where = {"path": request.path, "method": request.method} if parsed else {}
    log.log(level, "unparsable request", extra={**where, "remote": request.remote, "status": problem.status,
                                                "reason": problem.detail})


def from_workflow(exc: Exception) -> Problem:
    """NotFound -> 404; Forbidden -> 403 (the workflow raises it only for what the caller
    already sees; what he may not know exists is NotFound); IllegalTransition/Conflict -> 409;
    Invalid -> 422."""
    known = ("NotFound", "Forbidden", "IllegalTransition", "Conflict", "Invalid")
    name = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in known), type(exc).__name__)
    detail = str(exc) or name
    # A subclass may name its own problem type and carry members (e.g. 结果互认's priors).
    extensions = getattr(exc, "extensions", None) or {}
    slug = getattr(exc, "slug", None)
    if name == "NotFound":
        return Problem(404, detail, slug="not-found")
    if name == "Forbidden":
        return Problem(403, detail, slug="forbidden")
    if name == "IllegalTransition":
        return Problem(409, detail, slug="illegal-transition")
    if name == "Conflict":
        return Problem(409, detail, slug=slug or "conflict", **extensions)
    if name == "Invalid":
        return Problem(422, detail, slug="invalid")
    return Problem(400, detail)


def _is_workflow_error(exc: Exception) -> bool:
    return any(c.__name__ == "WorkflowError" for c in type(exc).__mro__)


@web.middleware
async def problem_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(request, problem)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = {404: f"no route {request.path}", 405: f"method {request.method} not allowed on {request.path}",
                  413: "request body too large"}.get(exc.status, exc.text or exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return problem_response(request, Problem(exc.status, detail, headers=headers))
    except HttpProcessingError as exc:  # a multipart body aiohttp cannot split, a line too long
        problem = unparsable(exc)
        log_unparsable(request, problem)
        return problem_response(request, problem)
    except Exception as exc:
        if _is_workflow_error(exc):
            return problem_response(request, from_workflow(exc))
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return problem_response(request, Problem(500, "internal error; it has been logged"))


class ProblemRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, answering a request its parser refused as problem+json
    (it answers ``text/plain`` and logs a traceback)."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        problem = unparsable(exc)
        # ``request`` is a placeholder (path "/"); no HTTP at all (TLS, a scanner) is as quiet as aiohttp keeps it
        log_unparsable(request, problem, parsed=False,
                       level=logging.DEBUG if type(exc).__name__ == "BadHttpMethod" else logging.WARNING)
        response = problem_response(None, problem)
        response.force_close()  # the parser's position in the stream is lost
        return response


class ProblemServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ProblemAppRunner(web.AppRunner):
    """An :class:`~aiohttp.web.AppRunner` whose connections use :class:`ProblemRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = ProblemServer  # the app's own Server, built by aiohttp; only __call__ differs
        return server
