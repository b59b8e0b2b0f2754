"""Sign-in and sessions over real HTTP on loopback (docs/desks.md): the cookie and its flags,
the same principal as a bearer token, CSRF on state-changing calls, sign-out and idle expiry
ending the session on the server, and pages sending a stranger to /signin."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from services.core.sessions import COOKIE, SESSIONS, session_key

from .support import PASSWORD, session_cookie


async def test_sign_in_sets_an_httponly_strict_cookie_and_describes_the_session(desk):
    s = await session_cookie(desk.base, "dr-wang")
    flags = [f.strip().lower() for f in s.set_cookie.split(";")]
    assert flags[0].startswith(f"{COOKIE}=") and "httponly" in flags and "samesite=strict" in flags
    assert "path=/" in flags and "secure" not in flags  # plain HTTP here (tests over TLS: test_security)
    assert len(s.cookie) >= 43  # 256 bits, base64url
    assert {k: s.body[k] for k in ("user", "name", "role", "organization", "centre", "centres")} == {
        "user": "dr-wang", "name": "王建国", "role": "reader", "organization": "county-hospital",
        "centre": "county-imaging", "centres": ["county-imaging"]}
    assert s.body["csrf_token"] and s.body["expires_at"].endswith("Z")
    # the store keeps the session id's hash only
    docs = await desk.rt.store.find(SESSIONS, {"user": "dr-wang"})
    assert [d["id"] for d in docs] == [session_key(s.cookie)] and s.cookie not in str(docs)
    status, body, _ = await desk.call("GET", "/api/v1/session", headers=s.headers(csrf=False))
    assert status == 200 and body["user"] == "dr-wang" and body["csrf_token"] == s.csrf_token


async def test_the_cookie_gives_the_same_principal_as_a_bearer_token(desk):
    s = await session_cookie(desk.base, "cg-clinic")
    _, by_cookie, _ = await desk.call("GET", "/api/v1/me", headers=s.headers(csrf=False))
    _, by_token, _ = await desk.call("GET", "/api/v1/me", headers={"Authorization": f"Bearer {desk.token('cg-clinic')}"})
    assert by_cookie.pop("token_id") != by_token.pop("token_id")
    by_cookie.pop("token_expires_at"), by_token.pop("token_expires_at")
    assert by_cookie == by_token
    status, studies, _ = await desk.call("GET", "/api/v1/studies", headers=s.headers(csrf=False))
    assert status == 200 and "items" in studies


async def test_a_wrong_password_and_an_unknown_user_get_the_same_401(desk):
    answers = []
    for user, password in (("dr-wang", "not-his-password"), ("nobody-here", PASSWORD), ("dr-li", PASSWORD)):
        status, body, headers = await desk.call("POST", "/api/v1/session", json={"user": user, "password": password})
        assert status == 401 and "Set-Cookie" not in headers
        answers.append((body["detail"], body["type"]))
    assert len(set(answers)) == 1  # dr-li exists but has no password yet: no different either


async def test_a_state_changing_call_without_the_csrf_header_is_403_and_changes_nothing(desk):
    s = await session_cookie(desk.base, "dr-wang")
    for headers in (s.headers(csrf=False), {**s.headers(csrf=False), "X-CSRF-Token": "forged"}):
        status, body, _ = await desk.call("DELETE", "/api/v1/session", headers=headers)
        assert status == 403 and "X-CSRF-Token" in body["detail"]
    assert (await desk.call("GET", "/api/v1/session", headers=s.headers(csrf=False)))[0] == 200
    status, _, _ = await desk.call("DELETE", "/api/v1/session", headers=s.headers())
    assert status == 204


async def test_sign_out_ends_the_session_on_the_server(desk):
    s = await session_cookie(desk.base, "dr-wang")
    status, _, headers = await desk.call("DELETE", "/api/v1/session", headers=s.headers())
    assert status == 204 and f"{COOKIE}=" in headers["Set-Cookie"]
    assert await desk.rt.store.find(SESSIONS, {"user": "dr-wang"}) == []
    for path in ("/api/v1/session", "/api/v1/me", "/api/v1/worklist"):
        status, body, _ = await desk.call("GET", path, headers=s.headers())
        assert status == 401, path
    status, _, headers = await desk.call("GET", "/desk", headers=s.headers())
    assert status == 303 and headers["Location"] == "/signin?next=/desk"


async def test_an_idle_session_expires_and_a_used_one_does_not(desk):
    idle = desk.rt.settings.session_idle_seconds
    used, unused = await session_cookie(desk.base, "dr-wang"), await session_cookie(desk.base, "dr-wang")
    for _ in range(3):  # used every two-thirds of the idle limit: alive past it
        desk.clock.advance(idle * 2 / 3)
        assert (await desk.call("GET", "/api/v1/me", headers=used.headers()))[0] == 200
    status, body, _ = await desk.call("GET", "/api/v1/me", headers=unused.headers())
    assert status == 401 and "sign in again" in body["detail"]
    desk.clock.advance(idle + 1)
    assert (await desk.call("GET", "/api/v1/me", headers=used.headers()))[0] == 401


async def test_a_session_ends_at_its_absolute_lifetime_however_used(desk):
    s = await session_cookie(desk.base, "dr-wang")
    step = desk.rt.settings.session_idle_seconds / 2
    elapsed = 0.0
    while elapsed + step < desk.rt.settings.session_max_seconds:
        desk.clock.advance(step)
        elapsed += step
        assert (await desk.call("GET", "/api/v1/me", headers=s.headers()))[0] == 200
    desk.clock.advance(step)
    assert (await desk.call("GET", "/api/v1/me", headers=s.headers()))[0] == 401


async def test_desk_sends_each_role_to_its_page_and_a_stranger_to_signin(desk):
    status, _, headers = await desk.call("GET", "/desk/admin?tab=users")
    location = urlsplit(headers["Location"])
    assert status == 303 and location.path == "/signin"
    assert parse_qs(location.query) == {"next": ["/desk/admin?tab=users"]}
    for user, target in (("dr-wang", "/desk/reader"), ("cg-clinic", "/desk/clinic"), ("admin", "/desk/admin")):
        s = await session_cookie(desk.base, user)
        status, _, headers = await desk.call("GET", "/desk", headers=s.headers(csrf=False))
        assert (status, headers["Location"]) == (303, target), user
    status, page, headers = await desk.call("GET", "/signin")
    assert status == 200 and 'id="signin-form"' in page and "script-src 'self'" in headers["Content-Security-Policy"]
    status, script, headers = await desk.call("GET", "/desk/static/desk.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and "export async function api" in script
    assert (await desk.call("GET", "/desk/static/..%2Fsignin.py"))[0] == 404
