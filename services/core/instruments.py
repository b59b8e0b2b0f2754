"""The instruments every service may count with: HTTP requests (an aiohttp middleware) and the
final DIMSE responses of a DICOM node.  They live in core so that the api and the gateway count
without importing the monitor; the monitor's own figures (queues, turnaround) are in
``services/monitor/instruments.py``.

* ``yilian_http_requests_total{method,route,status}``, ``yilian_http_request_duration_seconds{method,route}``
* ``yilian_dimse_responses_total{command,status}`` — final responses the gateway sent
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .metrics import metrics_of
from .runtime import Runtime

DIMSE_PENDING = (0xFF00, 0xFF01)
DIMSE_COMMANDS = {0x8001: "C-STORE", 0x8020: "C-FIND", 0x8010: "C-GET", 0x8021: "C-MOVE", 0x8030: "C-ECHO",
                  0x8130: "N-ACTION", 0x8100: "N-EVENT-REPORT"}


def http_middleware(rt: Runtime) -> Any:
    """Count and time every HTTP request by route template (never the raw path: ids would explode)."""
    registry = metrics_of(rt)
    requests = registry.counter("yilian_http_requests_total", "HTTP requests answered",
                                ("method", "route", "status"))
    latency = registry.histogram("yilian_http_request_duration_seconds", "HTTP request latency",
                                 ("method", "route"))

    @web.middleware
    async def measure(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "(unmatched)"
            requests.inc(method=request.method, route=route, status=str(status))
            latency.observe(time.perf_counter() - started, method=request.method, route=route)

    return measure


def dimse_counter(rt: Runtime) -> Any:
    return metrics_of(rt).counter("yilian_dimse_responses_total", "Final DIMSE responses sent by the gateway",
                                  ("command", "status"))


def count_dimse_response(rt: Runtime, command_field: int, status: int) -> None:
    """One final response (pending C-FIND/C-GET/C-MOVE responses are not results)."""
    if status in DIMSE_PENDING or command_field not in DIMSE_COMMANDS:
        return
    dimse_counter(rt).inc(command=DIMSE_COMMANDS[command_field], status=f"0x{status:04X}")
