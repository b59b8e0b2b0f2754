"""Sign-in for the desks: ``POST/GET/DELETE /api/v1/session`` (docs/desks.md).

``POST`` checks a user's password (argon2id, :mod:`services.core.passwords`) and answers with the
session's description and its ``yilian_session`` cookie (HttpOnly, SameSite=Strict, Path=/,
Secure over TLS).  A wrong name and a wrong password get the same 401 after the same work;
failures of one name slow its next attempts and then lock it (429 with ``Retry-After``).
Every sign-in, failure, refusal, lock and sign-out is in the audit trail.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiohttp import web

from ...core.consortium import User
from ...core.passwords import ATTEMPTS, USERS, ThrottlePolicy, after_failure, attempts_id, verify_password, \
    wait_before_attempt
from ...core.runtime import Runtime
from ...core.sessions import COOKIE, SessionPolicy, end_session, expires_at, open_session
from ...core.times import iso
from ..auth import SESSION, _trusted, session_policy
from ..context import AUDIT, CLOCK, DIRECTORY, TRUSTED_PROXIES, remote, runtime
from ..problems import Problem, json_response
from ..validation import json_body

routes = web.RouteTableDef()

WRONG = "用户名或密码错误 wrong user name or password"


def throttle_policy(rt: Runtime) -> ThrottlePolicy:
    s = rt.settings
    return ThrottlePolicy(free=s.signin_free_failures, lock_after=s.signin_lock_failures,
                          lock_seconds=s.signin_lock_seconds)


def centres_of(rt: Runtime, user: User) -> list[str]:
    """The reading centres a user's desk shows: his own (reader, coordinator), every one (admin),
    those reading for his organisation (clinic)."""
    if user.centre:
        return [user.centre]
    if user.role in ("admin", "auditor"):
        return sorted(rt.consortium.centres)
    chain = rt.consortium.ancestors(user.organization)
    return sorted({r.centre for r in rt.consortium.routes if not r.origins or any(o in chain for o in r.origins)})


def describe(rt: Runtime, user: User, doc: dict[str, Any], policy: SessionPolicy) -> dict[str, Any]:
    org = rt.consortium.organizations.get(user.organization)
    return {"user": user.id, "name": user.name, "role": user.role, "organization": user.organization,
            "organization_name": org.name if org else None, "centre": user.centre,
            "centres": centres_of(rt, user), "csrf_token": doc["csrf_token"],
            "expires_at": iso(expires_at(doc, policy)), "timezone": rt.local_time.name}


def over_tls(request: web.Request) -> bool:
    """Served over TLS: here, or (said by a trusted proxy) between the browser and the proxy."""
    if request.secure:
        return True
    proxies = request.app.get(TRUSTED_PROXIES, ())
    return (_trusted(request.remote, proxies)
            and request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() == "https")


async def audit(request: web.Request, user: str, role: str, action: str, *, organization: str | None,
                outcome: str = "success", **detail: Any) -> None:
    await request.app[AUDIT].record(actor=user, role=role, action=action, resource=f"user/{user}",
                                    organization=organization, outcome=outcome, remote=remote(request),
                                    detail=detail, traceparent=request.headers.get("traceparent"))


@routes.post("/api/v1/session")
async def sign_in(request: web.Request) -> web.Response:
    rt, now = runtime(request), request.app[CLOCK]()
    body = await json_body(request)
    name, password = body["user"], body["password"]
    await request.app[DIRECTORY].refresh()  # a public path: the middleware has not
    user = rt.consortium.users.get(name)
    role, org = (user.role, user.organization) if user else ("unknown", None)
    throttle, key = throttle_policy(rt), attempts_id(name)
    # The attempt counts as a failure before the password is checked, so parallel guesses count too.
    async with rt.store.transaction() as tx:
        before = await tx.get(ATTEMPTS, key)
        wait = wait_before_attempt(before, throttle, now)
        if wait <= 0:
            counted, locks = after_failure(before, throttle, now)
            await tx.put(ATTEMPTS, {**counted, "id": key})
    if wait > 0:
        await audit(request, name[:64], role, "session.signin", organization=org, outcome="throttled",
                    retry_after=math.ceil(wait))
        raise Problem(429, f"登录失败次数过多, 请{math.ceil(wait)}秒后再试 too many failed sign-ins for this user "
                           f"name; try again in {math.ceil(wait)} s", slug="too-many-attempts",
                      title="Too Many Requests", headers={"Retry-After": str(math.ceil(wait))})
    stored = await rt.store.get(USERS, name) if user else None
    ok = await asyncio.to_thread(verify_password, (stored or {}).get("password_hash"), password)
    if not ok or user is None or user.disabled:
        await audit(request, name[:64], role, "session.signin", organization=org, outcome="failure",
                    reason="disabled" if ok and user is not None else "wrong_password" if user else "unknown_user")
        if locks:
            await audit(request, name[:64], role, "session.lock", organization=org,
                        locked_seconds=throttle.lock_seconds, failures=throttle.lock_after)
        raise Problem(401, WRONG, slug="sign-in-failed")
    async with rt.store.transaction() as tx:
        await tx.delete(ATTEMPTS, key)
    policy = session_policy(rt)
    session_id, doc = await open_session(rt.store, user.id, policy, now, remote=remote(request))
    await audit(request, user.id, user.role, "session.signin", organization=user.organization,
                session=doc["id"][:16])
    resp = json_response(describe(rt, user, doc, policy))
    resp.set_cookie(COOKIE, session_id, path="/", httponly=True, samesite="Strict", secure=over_tls(request))
    return resp


def _session_or_401(request: web.Request) -> dict[str, Any]:
    doc = request.get(SESSION)
    if doc is None:
        raise Problem(401, "no session: this request carried a bearer token (GET /api/v1/me describes it)")
    return doc


@routes.get("/api/v1/session")
async def current(request: web.Request) -> web.Response:
    rt = runtime(request)
    doc = _session_or_401(request)
    return json_response(describe(rt, rt.consortium.users[doc["user"]], doc, session_policy(rt)))


@routes.delete("/api/v1/session")
async def sign_out(request: web.Request) -> web.Response:
    rt = runtime(request)
    doc = _session_or_401(request)
    await end_session(rt.store, request.cookies[COOKIE])
    user = rt.consortium.users[doc["user"]]
    await audit(request, user.id, user.role, "session.signout", organization=user.organization,
                session=doc["id"][:16])
    resp = web.Response(status=204)
    resp.del_cookie(COOKIE, path="/", samesite="Strict", secure=over_tls(request))
    return resp
