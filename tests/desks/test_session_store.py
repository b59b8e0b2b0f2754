"""Sessions and passwords through the store port: the same behaviour on every store adapter
(SQLite, MongoDB over mongomock, a real MongoDB when YILIAN_TEST_MONGO_URL is set)."""

from __future__ import annotations

import pytest

from services.core import passwords
from services.core.passwords import USERS, set_password, verify_password
from services.core.sessions import (SESSIONS, SessionPolicy, csrf_ok, end_session, end_sessions_of, find_session,
                                    open_session, session_key)

from ..contract.adapters import STORE_ADAPTERS

POLICY = SessionPolicy(idle_seconds=600, max_seconds=3600)
T0 = 1_795_000_000.0


@pytest.fixture(params=sorted(STORE_ADAPTERS))
async def store(request, tmp_path):
    async with STORE_ADAPTERS[request.param](tmp_path) as s:
        yield s


async def test_a_session_lives_while_used_and_ends_idle_at_its_end_or_signed_out(store):
    sid, doc = await open_session(store, "dr-wang", POLICY, T0)
    assert doc["id"] == session_key(sid) and await store.get(SESSIONS, sid) is None  # only the hash is kept
    found = await find_session(store, sid, POLICY, T0 + 599)
    assert found["user"] == "dr-wang" and found["last_seen"] == T0 + 599
    assert csrf_ok(found, doc["csrf_token"]) and not csrf_ok(found, "x") and not csrf_ok(found, None)
    assert await find_session(store, sid, POLICY, T0 + 599 + 600) is None  # idle
    assert await store.get(SESSIONS, doc["id"]) is None  # and gone from the store

    sid, doc = await open_session(store, "dr-wang", POLICY, T0)
    for t in range(500, 3600, 500):
        assert await find_session(store, sid, POLICY, T0 + t) is not None
    assert await find_session(store, sid, POLICY, T0 + 3600) is None  # its absolute end

    sid, _ = await open_session(store, "dr-wang", POLICY, T0)
    assert (await end_session(store, sid))["user"] == "dr-wang"
    assert await find_session(store, sid, POLICY, T0) is None
    first, _ = await open_session(store, "dr-li", POLICY, T0)
    second, _ = await open_session(store, "dr-li", POLICY, T0)
    assert await end_sessions_of(store, "dr-li") == 2
    assert await find_session(store, first, POLICY, T0) is None and await find_session(store, second, POLICY, T0) is None


@pytest.mark.production_argon2
async def test_a_password_is_kept_as_an_argon2id_hash(store):
    await set_password(store, "dr-wang", "王建国的密码-2026", now=T0, by="test")
    doc = await store.get(USERS, "dr-wang")
    # RFC 9106's second recommended profile (the other tests hash with the least work: tests/conftest.py)
    assert doc["password_hash"].startswith("$argon2id$v=19$m=65536,t=3,p=4$") and "王建国的密码" not in str(doc)
    assert verify_password(doc["password_hash"], "王建国的密码-2026")
    assert not verify_password(doc["password_hash"], "王建国的密码-2027") and not verify_password(None, "x")
    # an unknown user's check costs what a real one does: the dummy hash has the same parameters
    assert passwords._DUMMY.split("$")[:4] == doc["password_hash"].split("$")[:4]
    assert not passwords._hasher.check_needs_rehash(passwords._DUMMY)
