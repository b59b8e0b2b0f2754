"""Browser sessions of the desks, kept in the ``sessions`` collection (any store adapter).

The browser holds a random 256-bit session id in an HttpOnly cookie; the store holds only its
SHA-256, so a copy of the database opens no session.  A session ends when signed out, when it
has been idle ``idle_seconds``, at ``max_seconds`` after sign-in whatever its use, and when its
user is disabled.  Each session has its own CSRF token, which the page reads from
``GET /api/v1/session`` and sends back as ``X-CSRF-Token`` on every state-changing request.

``last_seen`` is written at most every ``touch_seconds`` (not on each of the hundreds of
requests an image viewer makes), so idle expiry is exact to within that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from .store.port import Doc, Store
from .times import iso

SESSIONS = "sessions"
COOKIE = "yilian_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle_seconds: int = 1800
    max_seconds: int = 12 * 3600
    touch_seconds: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "touch_seconds", min(self.touch_seconds, self.idle_seconds / 10))


def session_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def expires_at(doc: Doc, policy: SessionPolicy) -> float:
    """When this session ends if it is not used again."""
    return min(doc["last_seen"] + policy.idle_seconds, doc["created_at"] + policy.max_seconds)


async def open_session(store: Store, user_id: str, policy: SessionPolicy, now: float, *,
                       remote: str | None = None) -> tuple[str, Doc]:
    """A new session for ``user_id``: (the id for the cookie, the stored document)."""
    session_id = secrets.token_urlsafe(32)  # 256 bits
    doc = {"id": session_key(session_id), "user": user_id, "csrf_token": secrets.token_urlsafe(32),
           "created_at": now, "last_seen": now, "signed_in_at": iso(now), "remote": remote}
    async with store.transaction() as tx:
        await tx.insert(SESSIONS, doc)
        # the user's ended sessions go now, so the collection holds about the live ones
        for old in await tx.find(SESSIONS, {"user": user_id}):
            if old["id"] != doc["id"] and expires_at(old, policy) <= now:
                await tx.delete(SESSIONS, old["id"])
    return session_id, doc


async def find_session(store: Store, session_id: str, policy: SessionPolicy, now: float) -> Doc | None:
    """The live session of this id (its ``last_seen`` refreshed when due), or None."""
    if not session_id or len(session_id) > 256:
        return None
    key = session_key(session_id)
    doc = await store.get(SESSIONS, key)
    if doc is None:
        return None
    if expires_at(doc, policy) <= now:
        async with store.transaction() as tx:
            await tx.delete(SESSIONS, key)
        return None
    if now - doc["last_seen"] >= policy.touch_seconds:
        async with store.transaction() as tx:
            await tx.update(SESSIONS, key, {"last_seen": now})
        doc = {**doc, "last_seen": now}
    return doc


def csrf_ok(doc: Doc, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(doc["csrf_token"].encode(), header.encode("utf-8", "replace"))


async def end_session(store: Store, session_id: str) -> Doc | None:
    """Sign out: the session's document is gone; the old cookie opens nothing."""
    key = session_key(session_id)
    async with store.transaction() as tx:
        doc = await tx.get(SESSIONS, key)
        if doc is not None:
            await tx.delete(SESSIONS, key)
    return doc


async def end_sessions_of(store: Store, user_id: str) -> int:
    """Every session of ``user_id`` ends (the user was disabled or his password reset)."""
    async with store.transaction() as tx:
        docs = await tx.find(SESSIONS, {"user": user_id})
        for doc in docs:
            await tx.delete(SESSIONS, doc["id"])
    return len(docs)
