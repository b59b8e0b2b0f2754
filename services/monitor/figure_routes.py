"""HTTP of the consortium's figures (``/api/v1/figures``) and settlement (``/api/v1/settlement``),
and the ``/figures`` page.

Who sees what: coordinators, admins and auditors (the health commission) every site; a clinic
its own site and the village clinics under it; a reader only his own peer-review figures.
Settlement: admins and auditors every statement, a clinic the pairs its institution is part of;
only an admin closes a month or voids an entry.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp import web

from ..core import audit
from ..core.events import Event
from ..core.http import Problem, json_response, require_role, runtime
from .export import figure_tables, statement_tables, to_csv, to_xlsx
from .facts import LEDGER, MONTHS
from .figure_views import SECTIONS, FigureViews, Scope, scope_of
from .service import settings_of

routes = web.RouteTableDef()
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FIGURE_ROLES = ("coordinator", "admin", "auditor", "clinic", "reader")


def _views(request: web.Request) -> FigureViews:
    rt = runtime(request)
    return FigureViews(rt.store, rt.consortium, rt.local_time)


def _scope(request: web.Request, *roles: str) -> Scope:
    who = require_role(request, *roles)
    return scope_of(runtime(request).consortium, who.role, who.organization, who.user_id)


def _now_month(request: web.Request) -> str:
    rt = runtime(request)
    return datetime.fromtimestamp(settings_of(rt).clock(), rt.local_time.tz).strftime("%Y-%m")


def _period(request: web.Request) -> str:
    text = request.query.get("period") or _now_month(request)
    try:
        _views(request).period(text)
    except ValueError as exc:
        raise Problem(400, str(exc)) from None
    return text


def _month(request: web.Request, text: str | None) -> str:
    month = text or _now_month(request)
    if not MONTH.match(month):
        raise Problem(400, f"month {month!r} is not YYYY-MM")
    return month


def _download(body: bytes, content_type: str, filename: str) -> web.Response:
    return web.Response(body=body, content_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


@routes.get("/api/v1/figures")
async def figures(request: web.Request) -> web.Response:
    scope = _scope(request, *FIGURE_ROLES)
    return json_response(await _views(request).figures(_period(request), scope))


@routes.get("/api/v1/figures/trend")
async def trend(request: web.Request) -> web.Response:
    scope = _scope(request, *FIGURE_ROLES)
    year = request.query.get("year") or _now_month(request)[:4]
    if not re.match(r"^\d{4}$", year):
        raise Problem(400, f"year {year!r} is not YYYY")
    return json_response({"year": year, "months": await _views(request).trend(year, scope)})


@routes.get("/api/v1/figures/export")
async def export_figures(request: web.Request) -> web.Response:
    """``format=csv`` (one ``section``) or ``xlsx`` (every section a sheet)."""
    scope = _scope(request, *FIGURE_ROLES)
    period = _period(request)
    fmt = request.query.get("format", "xlsx")
    tables = figure_tables(await _views(request).figures(period, scope))
    if fmt == "xlsx":
        return _download(to_xlsx(tables, f"医共体统计 {period}"), XLSX, f"yilian-figures-{period}.xlsx")
    if fmt != "csv":
        raise Problem(400, f"format {fmt!r} is not csv or xlsx")
    section = request.query.get("section", "readings")
    named = {t[0]: t for t in tables}
    if section not in named:
        raise Problem(400, f"section {section!r} is not one of {', '.join(named) or 'the sections you may see'}"
                           f" (all: {', '.join(s for s in SECTIONS if s not in ('referrals', 'recognition'))})")
    return _download(to_csv(named[section]), "text/csv", f"yilian-{section}-{period}.csv")


@routes.get("/api/v1/settlement/statements")
async def statements(request: web.Request) -> web.Response:
    scope = _scope(request, "admin", "auditor", "clinic")
    return json_response(await _views(request).statement(_month(request, request.query.get("month")), scope))


@routes.get("/api/v1/settlement/ledger")
async def ledger(request: web.Request) -> web.Response:
    scope = _scope(request, "admin", "auditor", "clinic")
    month = _month(request, request.query.get("month"))
    return json_response({"month": month, "entries": await _views(request).ledger(month, scope)})


@routes.get("/api/v1/settlement/reconciliation")
async def reconciliation(request: web.Request) -> web.Response:
    require_role(request, "admin", "auditor")
    return json_response(await _views(request).reconciliation(_month(request, request.query.get("month"))))


@routes.get("/api/v1/settlement/export")
async def export_statement(request: web.Request) -> web.Response:
    scope = _scope(request, "admin", "auditor", "clinic")
    month = _month(request, request.query.get("month"))
    views = _views(request)
    tables = statement_tables(await views.statement(month, scope), await views.ledger(month, scope))
    fmt = request.query.get("format", "xlsx")
    if fmt == "xlsx":
        return _download(to_xlsx(tables, f"医共体结算 {month}"), XLSX, f"yilian-statement-{month}.xlsx")
    if fmt != "csv":
        raise Problem(400, f"format {fmt!r} is not csv or xlsx")
    table = tables[1] if request.query.get("table") == "ledger" else tables[0]
    return _download(to_csv(table), "text/csv", f"yilian-{table[0]}-{month}.csv")


@routes.post("/api/v1/settlement/months/{month}/close")
async def close_month(request: web.Request) -> web.Response:
    """Close a month that has ended: its statement freezes; later entries go to the next month."""
    who = require_role(request, "admin")
    month = _month(request, request.match_info["month"])
    rt = runtime(request)
    if month >= _now_month(request):
        raise Problem(409, f"month {month} has not ended yet (now {_now_month(request)} in {rt.local_time.name})")
    if await rt.store.get(MONTHS, month) is not None:
        raise Problem(409, f"month {month} is already closed")
    at = datetime.fromtimestamp(settings_of(rt).clock(), rt.local_time.tz)
    async with rt.store.transaction() as tx:  # the change and its audit record together
        tx.emit(Event("settlement.month_closed", subject=month, source=rt.source("monitor"), data={
            "month": month, "actor": who.user_id, "closed_at": _utc(at)}))
        await audit.record(tx, actor=who.user_id, role=who.role, action="settlement.close",
                           resource=f"settlement/{month}", remote=request.remote)
    return json_response({"month": month, "state": "closing"}, status=202)


@routes.post("/api/v1/settlement/entries/{entry}/void")
async def void_entry(request: web.Request) -> web.Response:
    """Cancel a ledger entry: its reversal is posted to the current open month."""
    who = require_role(request, "admin")
    rt = runtime(request)
    entry_id = request.match_info["entry"]
    try:
        body = await request.json()
    except ValueError:
        raise Problem(400, "the body must be a JSON object with a reason") from None
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        raise Problem(400, "reason (the cancellation's reason, text) is required")
    entry = await rt.store.get(LEDGER, entry_id)
    if entry is None:
        raise Problem(404, f"no ledger entry {entry_id!r}")
    if entry["type"] == "void" or entry.get("voided_by"):
        raise Problem(409, f"ledger entry {entry_id!r} is a reversal or already voided")
    at = datetime.fromtimestamp(settings_of(rt).clock(), rt.local_time.tz)
    async with rt.store.transaction() as tx:
        tx.emit(Event("settlement.entry_voided", subject=entry_id, source=rt.source("monitor"), data={
            "entry_id": entry_id, "reason": reason.strip()[:500], "actor": who.user_id, "voided_at": _utc(at)}))
        await audit.record(tx, actor=who.user_id, role=who.role, action="settlement.void",
                           resource=f"settlement/{entry_id}", organization=entry.get("requesting"),
                           remote=request.remote, detail={"reason": reason.strip()[:500]})
    return json_response({"entry_id": entry_id, "state": "voiding"}, status=202)


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["routes"]
