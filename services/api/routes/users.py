"""Users and passwords (admin; a user's own password): ``/api/v1/users`` (docs/desks.md).

The consortium file's users are the initial set; what an admin creates or changes is kept in
the ``users`` collection and laid over the file (:mod:`services.core.users`).  Disabling a
user ends his sessions at once and makes his bearer tokens fail at his next request.
Every change is audited in the same transaction.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ...core import audit
from ...core.consortium import User
from ...core.passwords import ATTEMPTS, PasswordRejected, attempts_id, check_new, set_password, verify_password
from ...core.sessions import SESSIONS
from ...core.times import iso
from ...core.users import FILE_KEY, PROFILE, USERS, UserRejected, build, profile_of
from ..auth import SESSION
from ..context import CLOCK, DIRECTORY, principal, remote, require_role, runtime
from ..problems import Problem, json_response
from ..validation import json_body, known_query

routes = web.RouteTableDef()


def describe(rt: Any, user: User, doc: dict[str, Any] | None, attempts: dict[str, Any] | None,
             now: float) -> dict[str, Any]:
    org = rt.consortium.organizations.get(user.organization)
    file_user = rt.shared.get(FILE_KEY, rt.consortium).users.get(user.id)
    locked = (attempts or {}).get("locked_until", 0)
    return {"id": user.id, "name": user.name, "role": user.role, "organization": user.organization,
            "organization_name": org.name if org else None, "centre": user.centre, "title": user.title,
            "specialty": user.specialty, "licence_number": user.licence_number, "disabled": user.disabled,
            "source": "file" if file_user is not None else "admin",
            "password_set": bool((doc or {}).get("password_hash")),
            "password_changed_at": (doc or {}).get("password_changed_at"),
            "locked_until": iso(locked) if locked > now else None}


async def _refreshed(request: web.Request) -> None:
    directory = request.app[DIRECTORY]
    directory.invalidate()
    await directory.refresh()


@routes.get("/api/v1/users")
async def list_users(request: web.Request) -> web.Response:
    require_role(request, "admin")
    known_query(request, ("role", "organization"))
    rt, now = runtime(request), request.app[CLOCK]()
    docs = {d["id"]: d for d in await rt.store.find(USERS)}
    attempts = {d["id"]: d for d in await rt.store.find(ATTEMPTS)}
    users = [u for u in rt.consortium.users.values()
             if request.query.get("role") in (None, "", u.role)
             and request.query.get("organization") in (None, "", u.organization)]
    items = [describe(rt, u, docs.get(u.id), attempts.get(attempts_id(u.id)), now)
             for u in sorted(users, key=lambda u: (u.organization, u.role, u.id))]
    return json_response({"items": items})


@routes.post("/api/v1/users")
async def create_user(request: web.Request) -> web.Response:
    who = require_role(request, "admin")
    rt, now = runtime(request), request.app[CLOCK]()
    body = await json_body(request)
    user_id, password = body.pop("id"), body.pop("password", None)
    if user_id in rt.consortium.users:
        raise Problem(409, f"user {user_id!r} exists")
    try:
        user = build(rt.consortium, user_id, body, None)
        if password is not None:
            check_new(password)
    except (UserRejected, PasswordRejected) as exc:
        raise Problem(422, str(exc)) from None
    doc = {"id": user_id, **{k: getattr(user, k) for k in PROFILE}, "created_at": iso(now), "created_by": who.user_id}
    async with rt.store.transaction() as tx:
        if await tx.get(USERS, user_id) is not None:
            raise Problem(409, f"user {user_id!r} exists")
        await tx.insert(USERS, doc)
        await audit.record(tx, actor=who.user_id, role=who.role, action="user.create", resource=f"user/{user_id}",
                           organization=user.organization, remote=remote(request),
                           detail={k: v for k, v in profile_of(doc).items() if v is not None})
    if password is not None:
        await set_password(rt.store, user_id, password, now=now, by=who.user_id)
    await _refreshed(request)
    stored = await rt.store.get(USERS, user_id)
    return json_response(describe(rt, rt.consortium.users[user_id], stored, None, now), status=201)


def _user(request: web.Request) -> User:
    user = runtime(request).consortium.users.get(request.match_info["user_id"])
    if user is None:
        raise Problem(404, f"no user {request.match_info['user_id']!r}")
    return user


@routes.patch("/api/v1/users/{user_id}")
async def change_user(request: web.Request) -> web.Response:
    who = require_role(request, "admin")
    rt, now = runtime(request), request.app[CLOCK]()
    user = _user(request)
    changes = await json_body(request)
    if user.id == who.user_id and (changes.get("disabled") or changes.get("role", "admin") != "admin"):
        raise Problem(409, "an admin may not disable himself or take away his own admin role "
                           "(另一位管理员可以 - another admin may)")
    try:
        changed = build(rt.consortium, user.id, changes, user)
    except UserRejected as exc:
        raise Problem(422, str(exc)) from None
    before = {k: getattr(user, k) for k in changes}
    async with rt.store.transaction() as tx:
        doc = await tx.get(USERS, user.id) or {"id": user.id}
        doc.update({k: getattr(changed, k) for k in changes}, updated_at=iso(now), updated_by=who.user_id)
        await tx.put(USERS, doc)
        ended = 0
        if changed.disabled and not user.disabled:
            for session in await tx.find(SESSIONS, {"user": user.id}):
                ended += await tx.delete(SESSIONS, session["id"])
        await audit.record(tx, actor=who.user_id, role=who.role,
                           action="user.disable" if changed.disabled and not user.disabled else "user.update",
                           resource=f"user/{user.id}", organization=changed.organization, remote=remote(request),
                           detail={"before": before, "after": {k: getattr(changed, k) for k in changes},
                                   "sessions_ended": ended})
    await _refreshed(request)
    attempts = await rt.store.get(ATTEMPTS, attempts_id(user.id))
    return json_response(describe(rt, rt.consortium.users[user.id], doc, attempts, now))


@routes.put("/api/v1/users/{user_id}/password")
async def change_password(request: web.Request) -> web.Response:
    """An admin sets anyone's (a reset: the user's sessions end); a user changes his own with the old one."""
    who, rt, now = principal(request), runtime(request), request.app[CLOCK]()
    user = _user(request) if who.role == "admin" or request.match_info["user_id"] == who.user_id else None
    if user is None:
        raise Problem(403, "only an admin may set another user's password")
    body = await json_body(request)
    own = user.id == who.user_id
    if own and who.role != "admin" or "old_password" in body:
        doc = await rt.store.get(USERS, user.id)
        if not await asyncio.to_thread(verify_password, (doc or {}).get("password_hash"), body.get("old_password", "")):
            raise Problem(403, "当前密码不对 the current password is wrong", slug="wrong-password")
    try:
        check_new(body["password"])
    except PasswordRejected as exc:
        raise Problem(422, str(exc)) from None
    await set_password(rt.store, user.id, body["password"], now=now, by=who.user_id, audit_record=dict(
        actor=who.user_id, role=who.role, action="user.password.change" if own else "user.password.reset",
        resource=f"user/{user.id}", organization=user.organization, remote=remote(request), detail={}))
    # the user's other sessions end: whoever knew the old password is out
    current = (request.get(SESSION) or {}).get("id")
    async with rt.store.transaction() as tx:
        for session in await tx.find(SESSIONS, {"user": user.id}):
            if session["id"] != current:
                await tx.delete(SESSIONS, session["id"])
    return web.Response(status=204)
