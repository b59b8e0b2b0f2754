"""The page shell every desk shares: header (who is signed in, 退出/sign out), one stylesheet,
ES modules from ``/desk/static/``, and the headers that keep a page to its own origin.

The server writes the user's id and organisation id; ``desk.js`` fills in the names from
``GET /api/v1/session`` (the same call gives the page its CSRF token).
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from aiohttp import web

from ...core.auth import Principal

ROLES = {"reader": "阅片医生 Reader", "clinic": "基层机构 Clinic", "coordinator": "调度员 Coordinator",
         "admin": "管理员 Admin", "auditor": "审计员 Auditor"}

# Scripts only from this origin (no inline script); inline style attributes are allowed (no data in them).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store", "X-Frame-Options": "SAMEORIGIN"}


def script_url(name: str) -> str:
    return name if name.startswith("/") else f"/desk/static/{name}"


def page(title: str, body_html: str, *, scripts: Iterable[str] = (), principal: Principal | None = None,
         status: int = 200) -> web.Response:
    """A whole desk page: ``title`` is text (Chinese first, then English), ``body_html`` is trusted
    markup the desk module built (escape what came from data!), ``scripts`` names ES modules in
    ``static/`` (or absolute paths)."""
    tags = "".join(f'<script type="module" src="{escape(script_url(s))}"></script>\n'
                   for s in ("desk.js", *scripts))
    who = ""
    if principal is not None:
        who = (f'<div class="desk-who" id="desk-who" data-user="{escape(principal.user_id)}" '
               f'data-role="{escape(principal.role)}">'
               f'<span class="desk-name" id="desk-name">{escape(principal.user_id)}</span>'
               f'<span class="desk-org" id="desk-org">{escape(principal.organization)}</span>'
               f'<span class="desk-role">{escape(ROLES.get(principal.role, principal.role))}</span>'
               '<button type="button" id="desk-signout" class="desk-signout">退出 <small>Sign out</small></button>'
               '</div>')
    html = f"""<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>{escape(title)} · 医联 Yilian</title>
<link rel="stylesheet" href="/desk/static/desk.css">
{tags}</head>
<body>
<header class="desk-top">
<a class="desk-brand" href="/desk">医联 <small>Yilian</small></a>
<h1 class="desk-title">{escape(title)}</h1>
{who}
</header>
<main class="desk-main" id="desk-main">
{body_html}
</main>
</body>
</html>
"""
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)
