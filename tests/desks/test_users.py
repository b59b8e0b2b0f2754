"""Users and passwords through the API (admin; a user's own): created users are stored and sign
in, survive a restart; disabling ends sessions and bearer tokens; resets end the old sessions."""

from __future__ import annotations

from services.core.sessions import SESSIONS

from .conftest import start_desk, stop_desk
from .support import PASSWORD, session_cookie

NEW = {"id": "dr-ma", "name": "马丽", "role": "reader", "organization": "county-hospital", "centre": "county-imaging",
       "title": "主治医师", "password": "马丽的初始密码-2026"}


def bearer(desk, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {desk.token(user)}"}


async def test_an_admin_creates_a_reader_who_signs_in_and_works_and_is_kept(desk, tmp_path):
    admin = await session_cookie(desk.base, "admin")
    status, user, _ = await desk.call("POST", "/api/v1/users", headers=admin.headers(), json=NEW)
    assert status == 201, user
    assert {k: user[k] for k in ("id", "name", "role", "centre", "title", "source", "password_set", "disabled")} == {
        "id": "dr-ma", "name": "马丽", "role": "reader", "centre": "county-imaging", "title": "主治医师",
        "source": "admin", "password_set": True, "disabled": False}
    assert (await desk.call("POST", "/api/v1/users", headers=admin.headers(), json=NEW))[0] == 409
    ma = await session_cookie(desk.base, "dr-ma", NEW["password"])
    assert ma.body["centres"] == ["county-imaging"]
    status, _, _ = await desk.call("GET", "/api/v1/worklist", headers=ma.headers())
    assert status == 200
    _, listing, _ = await desk.call("GET", "/api/v1/users?role=reader", headers=admin.headers())
    assert "dr-ma" in [u["id"] for u in listing["items"]] and {u["role"] for u in listing["items"]} == {"reader"}
    assert all("password_hash" not in u for u in listing["items"])
    actions = [r["action"] for r in await desk.rt.store.find("audit", {"resource": "user/dr-ma"})]
    assert "user.create" in actions

    # a restart on the same store: the user is still there
    await stop_desk(desk)
    again = await start_desk(tmp_path)
    try:
        await session_cookie(again.base, "dr-ma", NEW["password"])
    finally:
        await stop_desk(again)


async def test_bad_users_are_422_and_unknown_ones_404(desk):
    admin = bearer(desk, "admin")
    for body, why in (({**NEW, "centre": None}, "needs a centre"),
                      ({**NEW, "centre": "city-imaging"}, "not part of organization"),
                      ({**NEW, "organization": "nowhere"}, "unknown organization"),
                      ({**NEW, "id": "Dr Ma"}, "id"),
                      ({**NEW, "password": "short"}, "password")):
        status, problem, _ = await desk.call("POST", "/api/v1/users", headers=admin, json=body)
        assert status == 422 and why in problem["detail"], (body, problem)
    assert await desk.rt.store.get("users", "dr-ma") is None
    assert (await desk.call("PATCH", "/api/v1/users/nobody", headers=admin, json={"disabled": True}))[0] == 404
    status, problem, _ = await desk.call("PATCH", "/api/v1/users/admin", headers=admin, json={"disabled": True})
    assert status == 409
    for user in ("dr-wang", "cg-clinic", "coord-county", "auditor"):
        assert (await desk.call("GET", "/api/v1/users", headers=bearer(desk, user)))[0] == 403
        assert (await desk.call("PATCH", "/api/v1/users/dr-li", headers=bearer(desk, user),
                                json={"disabled": True}))[0] == 403


async def test_disabling_ends_sessions_and_tokens_and_enabling_lets_him_back(desk):
    wang = await session_cookie(desk.base, "dr-wang")
    token = bearer(desk, "dr-wang")
    assert (await desk.call("GET", "/api/v1/me", headers=token))[0] == 200
    status, user, _ = await desk.call("PATCH", "/api/v1/users/dr-wang", headers=bearer(desk, "admin"),
                                      json={"disabled": True})
    assert status == 200 and user["disabled"] is True
    assert await desk.rt.store.find(SESSIONS, {"user": "dr-wang"}) == []
    assert (await desk.call("GET", "/api/v1/me", headers=wang.headers()))[0] == 401
    status, problem, _ = await desk.call("GET", "/api/v1/me", headers=token)
    assert status == 401 and "disabled" in problem["detail"]
    status, problem, _ = await desk.call("POST", "/api/v1/session", json={"user": "dr-wang", "password": PASSWORD})
    assert status == 401 and problem["detail"].startswith("用户名或密码错误")  # no hint that he exists
    record = (await desk.rt.store.find("audit", {"action": "user.disable"}))[0]
    assert record["actor"] == "admin" and record["detail"]["sessions_ended"] == 1
    await desk.call("PATCH", "/api/v1/users/dr-wang", headers=bearer(desk, "admin"), json={"disabled": False})
    assert (await desk.call("GET", "/api/v1/me", headers=token))[0] == 200
    await session_cookie(desk.base, "dr-wang")


async def test_an_admin_changes_a_role_and_the_user_has_it_at_once(desk):
    admin = bearer(desk, "admin")
    status, user, _ = await desk.call("PATCH", "/api/v1/users/dr-li", headers=admin,
                                      json={"role": "coordinator", "title": None})
    assert status == 200 and user["role"] == "coordinator"
    status, me, _ = await desk.call("GET", "/api/v1/me", headers=bearer(desk, "dr-li"))
    assert status == 200 and me["role"] == "coordinator"


async def test_password_reset_and_own_change(desk):
    old = await session_cookie(desk.base, "cg-clinic")
    # a user may not set another's
    status, _, _ = await desk.call("PUT", "/api/v1/users/dr-wang/password", headers=old.headers(),
                                   json={"password": "x" * 12})
    assert status == 403
    # his own: the current password is needed
    status, problem, _ = await desk.call("PUT", "/api/v1/users/cg-clinic/password", headers=old.headers(),
                                         json={"password": "cg-new-password-1", "old_password": "wrong-one"})
    assert status == 403
    other = await session_cookie(desk.base, "cg-clinic")
    status, _, _ = await desk.call("PUT", "/api/v1/users/cg-clinic/password", headers=old.headers(),
                                   json={"password": "cg-new-password-1", "old_password": PASSWORD})
    assert status == 204
    assert (await desk.call("GET", "/api/v1/me", headers=old.headers()))[0] == 200  # this one goes on
    assert (await desk.call("GET", "/api/v1/me", headers=other.headers()))[0] == 401  # the other ended
    # an admin's reset: every session of the user ends
    status, _, _ = await desk.call("PUT", "/api/v1/users/cg-clinic/password", headers=bearer(desk, "admin"),
                                   json={"password": "cg-reset-password-2"})
    assert status == 204
    assert (await desk.call("GET", "/api/v1/me", headers=old.headers()))[0] == 401
    assert (await desk.call("POST", "/api/v1/session", json={"user": "cg-clinic",
                                                              "password": "cg-new-password-1"}))[0] == 401
    await session_cookie(desk.base, "cg-clinic", "cg-reset-password-2")
    actions = [r["action"] for r in await desk.rt.store.find("audit", {"resource": "user/cg-clinic"})]
    assert "user.password.change" in actions and "user.password.reset" in actions
