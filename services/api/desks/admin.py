"""``/desk/admin``: the consortium's users — create, change role/organisation/centre, disable,
reset a password — through ``/api/v1/users`` (admin only)."""

from __future__ import annotations

from aiohttp import web

from ...core.http import principal
from .layout import page

routes = web.RouteTableDef()

ROLE_OPTIONS = "".join(f'<option value="{v}">{t}</option>' for v, t in (
    ("clinic", "基层机构 Clinic"), ("reader", "阅片医生 Reader"), ("coordinator", "调度员 Coordinator"),
    ("admin", "管理员 Admin"), ("auditor", "审计员 Auditor")))
TITLE_OPTIONS = '<option value="">—</option>' + "".join(
    f'<option value="{t}">{t}</option>' for t in ("住院医师", "主治医师", "副主任医师", "主任医师"))

BODY = f"""
<section class="desk-card">
  <div class="desk-row admin-bar">
    <h2>用户管理 <small>Users</small></h2>
    <input id="users-search" type="search" placeholder="搜索 姓名/ID/机构 Search" aria-label="搜索 Search">
    <select id="users-role" aria-label="角色 Role"><option value="">全部角色 All roles</option>{ROLE_OPTIONS}</select>
    <button type="button" id="user-new" class="desk-primary">新建用户 <small>New user</small></button>
  </div>
  <p id="users-message" class="desk-hint" role="status" aria-live="polite"></p>
  <div class="desk-scroll">
    <table class="desk-table stack" id="users">
      <thead><tr><th>用户 <small>User</small></th><th>角色 <small>Role</small></th><th>机构 <small>Organisation</small></th>
        <th>中心 <small>Centre</small></th><th>密码 <small>Password</small></th><th>状态 <small>State</small></th>
        <th>操作 <small>Actions</small></th></tr></thead>
      <tbody></tbody>
    </table>
  </div>
</section>

<dialog id="user-dialog">
  <form id="user-form" method="dialog">
    <h2 id="user-dialog-title">新建用户 <small>New user</small></h2>
    <label for="user-id">用户名 <small>User id (a-z 0-9 - _)</small></label>
    <input id="user-id" name="id" required pattern="[a-z0-9][a-z0-9_\\-]{{0,63}}" autocomplete="off" autocapitalize="none">
    <label for="user-name">姓名 <small>Name</small></label>
    <input id="user-name" name="name" required maxlength="100" autocomplete="off">
    <label for="user-role">角色 <small>Role</small></label>
    <select id="user-role" name="role">{ROLE_OPTIONS}</select>
    <label for="user-org">机构 <small>Organisation</small></label>
    <select id="user-org" name="organization"></select>
    <label for="user-centre">中心 <small>Centre (reader, coordinator)</small></label>
    <select id="user-centre" name="centre"></select>
    <label for="user-title">职称 <small>Title</small></label>
    <select id="user-title" name="title">{TITLE_OPTIONS}</select>
    <div id="user-password-row">
      <label for="user-password">初始密码 <small>Initial password (at least 10)</small></label>
      <input id="user-password" name="password" type="password" autocomplete="new-password" minlength="10">
    </div>
    <p id="user-error" class="desk-error" role="alert"></p>
    <div class="desk-row">
      <button type="button" data-close>取消 <small>Cancel</small></button>
      <button type="submit" id="user-save" class="desk-primary">保存 <small>Save</small></button>
    </div>
  </form>
</dialog>

<dialog id="password-dialog">
  <form id="password-form" method="dialog">
    <h2>重置密码 <small>Reset password</small></h2>
    <p id="password-who"></p>
    <label for="password-new">新密码 <small>New password (at least 10)</small></label>
    <input id="password-new" type="password" autocomplete="new-password" required minlength="10">
    <label for="password-again">再输一次 <small>Again</small></label>
    <input id="password-again" type="password" autocomplete="new-password" required minlength="10">
    <p class="desk-hint">该用户的所有会话将结束。<small>All of the user's sessions end.</small></p>
    <p id="password-error" class="desk-error" role="alert"></p>
    <div class="desk-row">
      <button type="button" data-close>取消 <small>Cancel</small></button>
      <button type="submit" id="password-save" class="desk-primary">重置 <small>Reset</small></button>
    </div>
  </form>
</dialog>
"""

REFUSED = ('<section class="desk-card"><h2>仅限管理员 <small>Admins only</small></h2>'
           '<p><a href="/desk">返回我的工作台 <small>Back to my desk</small></a></p></section>')


@routes.get("/desk/admin")
async def admin_page(request: web.Request) -> web.Response:
    who = principal(request)
    if who.role != "admin":
        return page("用户管理 Users", REFUSED, principal=who, status=403)
    return page("用户管理 Users", BODY, scripts=("admin.js",), principal=who)
