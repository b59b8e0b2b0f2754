"""``/signin`` (public) and ``/desk``, which sends a signed-in user to his role's desk."""

from __future__ import annotations

from aiohttp import web

from ...core.http import principal
from .layout import page

routes = web.RouteTableDef()

DESKS = {"reader": "/desk/reader", "clinic": "/desk/clinic", "admin": "/desk/admin", "coordinator": "/dashboard"}

FORM = """
<section class="desk-card desk-signin">
  <h2>登录 <small>Sign in</small></h2>
  <form id="signin-form" autocomplete="on" novalidate>
    <label for="signin-user">用户名 <small>User</small></label>
    <input id="signin-user" name="username" autocomplete="username" autocapitalize="none" spellcheck="false"
           required maxlength="128" autofocus>
    <label for="signin-password">密码 <small>Password</small></label>
    <input id="signin-password" name="password" type="password" autocomplete="current-password" required
           maxlength="1024">
    <button type="submit" id="signin-submit" class="desk-primary">登录 <small>Sign in</small></button>
    <p id="signin-error" class="desk-error" role="alert" aria-live="assertive"></p>
  </form>
  <p class="desk-hint">忘记密码请联系医联体管理员。<small>Forgot your password? Ask the consortium's admin.</small></p>
</section>
"""


@routes.get("/signin")
async def signin_page(_: web.Request) -> web.Response:
    return page("登录 Sign in", FORM, scripts=("signin.js",))


@routes.get("/desk")
async def desk(request: web.Request) -> web.Response:
    who = principal(request)
    target = DESKS.get(who.role)
    if target is not None:
        raise web.HTTPSeeOther(target)
    body = ('<section class="desk-card"><h2>没有适合您角色的工作台 <small>No desk for this role</small></h2>'
            '<p>审计员通过 API 查询审计记录 (<code>GET /api/v1/audit</code>)。'
            '<small>Auditors read the audit trail through the API.</small></p></section>')
    return page("工作台 Desk", body, principal=who)
