"""Repeated failed sign-ins slow down, then lock the user name for a while — the same for a name
that does not exist — and every failure, refusal and lock is in the audit trail's hash chain."""

from __future__ import annotations

import asyncio

from services.core import audit

from .support import PASSWORD


async def attempt(desk, user: str, password: str) -> tuple[int, dict, dict]:
    return await desk.call("POST", "/api/v1/session", json={"user": user, "password": password})


async def test_failures_slow_down_then_lock_and_a_right_password_waits_too(desk):
    s = desk.rt.settings
    for _ in range(s.signin_free_failures):
        assert (await attempt(desk, "dr-wang", "wrong-password"))[0] == 401
    status, body, headers = await attempt(desk, "dr-wang", PASSWORD)  # at once: slowed, even if right
    assert status == 429 and headers["Retry-After"] == "1" and "登录失败次数过多" in body["detail"]
    delays = []
    for _ in range(s.signin_lock_failures - s.signin_free_failures):
        status, _, headers = await attempt(desk, "dr-wang", "wrong-password")
        if status == 429:
            delays.append(int(headers["Retry-After"]))
            desk.clock.advance(int(headers["Retry-After"]))
            status, _, headers = await attempt(desk, "dr-wang", "wrong-password")
        assert status == 401
    assert delays == [1, 2, 4, 8, 16]  # each wait doubles
    status, _, headers = await attempt(desk, "dr-wang", PASSWORD)
    assert status == 429 and int(headers["Retry-After"]) == s.signin_lock_seconds  # locked
    desk.clock.advance(s.signin_lock_seconds - 1)
    assert (await attempt(desk, "dr-wang", PASSWORD))[0] == 429
    desk.clock.advance(1)
    assert (await attempt(desk, "dr-wang", PASSWORD))[0] == 200  # the lock ran out

    records = await desk.rt.store.find("audit", {"resource": "user/dr-wang"}, sort=[("seq", 1)])
    outcomes = [(r["action"], r["outcome"]) for r in records]
    assert outcomes.count(("session.signin", "failure")) == s.signin_lock_failures
    assert outcomes.count(("session.lock", "success")) == 1
    assert outcomes.count(("session.signin", "throttled")) == 3 + len(delays)
    assert outcomes[-1] == ("session.signin", "success")
    assert all(r["remote"] == "127.0.0.1" for r in records)
    failure = next(r for r in records if r["outcome"] == "failure")
    assert failure["detail"]["reason"] == "wrong_password" and PASSWORD not in str(records)
    assert (await audit.verify(desk.rt.store)).intact


async def test_an_unknown_name_is_slowed_and_locked_like_a_real_one(desk):
    answers = {}
    for user in ("dr-wang", "no-such-user"):
        seen = []
        for _ in range(desk.rt.settings.signin_free_failures + 1):
            status, body, headers = await attempt(desk, user, "wrong-password")
            seen.append((status, body["detail"], headers.get("Retry-After")))
        answers[user] = seen
    assert answers["dr-wang"] == answers["no-such-user"]
    assert answers["dr-wang"][-1][0] == 429


async def test_guesses_sent_at_once_are_all_counted(desk):
    free = desk.rt.settings.signin_free_failures
    results = await asyncio.gather(*(attempt(desk, "cg-clinic", f"guess-{i:04d}-xx") for i in range(3 * free)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [401] * free + [429] * (2 * free)


async def test_a_password_reset_clears_a_lock(desk):
    s = desk.rt.settings
    for _ in range(s.signin_lock_failures):
        status, _, headers = await attempt(desk, "cg-clinic", "wrong-password")
        if status == 429:
            desk.clock.advance(int(headers["Retry-After"]))
            await attempt(desk, "cg-clinic", "wrong-password")
    assert (await attempt(desk, "cg-clinic", PASSWORD))[0] == 429
    status, _, _ = await desk.call("PUT", "/api/v1/users/cg-clinic/password",
                                   headers={"Authorization": f"Bearer {desk.token('admin')}"},
                                   json={"password": "a-new-password-2026"})
    assert status == 204
    assert (await attempt(desk, "cg-clinic", "a-new-password-2026"))[0] == 200
