"""Desk passwords: argon2id hashes in the ``users`` collection, and the sign-in throttle.

A user's password lives in the store (``users/<id>``: ``password_hash``), never in the
consortium file.  Hashing takes tens of milliseconds and 64 MiB on purpose (RFC 9106's
second recommended profile, argon2-cffi's default): callers run it off the event loop.

The throttle (:func:`throttle`) is pure: failures of one user name, counted in
``signin_attempts/<name>`` whether or not the user exists (so the answers never tell), first
slow down (a growing wait between attempts), then lock the name for a while.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from . import audit
from .store.port import Doc, Store
from .times import iso

USERS = "users"
ATTEMPTS = "signin_attempts"
MIN_LENGTH = 10  # 密码至少10位 (等保 2.0 asks for complexity; length is what resists guessing)
MAX_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is a denial of service

_hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4
# Verified against for an unknown user, so a wrong name costs the same time as a wrong password:
# ``_hasher.hash("yilian-no-such-user")`` made once and written here (hashing it at import cost every
# yilian process ~0.2 s); tests/desks/test_session_store.py checks it has _hasher's parameters.
_DUMMY = "$argon2id$v=19$m=65536,t=3,p=4$NalkX3BMMNx7/xKqDkWfiQ$aQkga+y7WprqCOSn9D2pLHs1MS+Y76AIUuE5HoQkWn4"


class PasswordRejected(ValueError):
    """A new password that does not meet the rules; the message says which."""


def check_new(password: Any) -> str:
    if not isinstance(password, str):
        raise PasswordRejected("password must be a string")
    if len(password) < MIN_LENGTH:
        raise PasswordRejected(f"password must have at least {MIN_LENGTH} characters (密码至少{MIN_LENGTH}位)")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"password must have at most {MAX_LENGTH} characters")
    if password.strip() != password or not password.strip():
        raise PasswordRejected("password must not begin or end with a space")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_new(password))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; a user without a password (or a bad hash) never matches,
    after the same work as a real check."""
    try:
        return _hasher.verify(stored_hash or _DUMMY, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def set_password(store: Store, user_id: str, password: str, *, now: float, by: str,
                       audit_record: dict[str, Any] | None = None) -> None:
    """Store a new hash for ``user_id`` (the caller checked the user exists) and clear a lock, with
    ``audit_record`` (:func:`services.core.audit.record`'s arguments) in the same transaction."""
    hashed = await asyncio.to_thread(hash_password, password)
    async with store.transaction() as tx:
        doc = await tx.get(USERS, user_id) or {"id": user_id}
        doc.update(password_hash=hashed, password_changed_at=iso(now), password_changed_by=by)
        await tx.put(USERS, doc)
        await tx.delete(ATTEMPTS, attempts_id(user_id))
        if audit_record is not None:
            await audit.record(tx, **audit_record)


def attempts_id(user: str) -> str:
    return user.strip().lower()[:128]


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """``free`` failures cost nothing; each further one doubles the wait before the next attempt
    (1 s, 2 s, 4 s ... at most ``max_delay``); ``lock_after`` failures lock the name ``lock_seconds``."""

    free: int = 5
    lock_after: int = 10
    lock_seconds: int = 900
    max_delay: int = 60
    forget_after: int = 24 * 3600  # failures older than this (since the last one) no longer count


def wait_before_attempt(doc: Doc | None, policy: ThrottlePolicy, now: float) -> float:
    """Seconds until the next attempt may be made (0: now)."""
    if not doc:
        return 0.0
    if doc.get("locked_until", 0) > now:
        return doc["locked_until"] - now
    failures, last = doc.get("failures", 0), doc.get("last_failure_at", 0)
    if now - last > policy.forget_after or failures < policy.free:
        return 0.0
    delay = min(2 ** (failures - policy.free), policy.max_delay)
    return max(0.0, last + delay - now)


def after_failure(doc: Doc | None, policy: ThrottlePolicy, now: float) -> tuple[Doc, bool]:
    """The attempts document after one more failure, and whether it now locks the name."""
    doc = dict(doc or {})
    stale = now - doc.get("last_failure_at", 0) > policy.forget_after or doc.get("locked_until", 0) and \
        doc["locked_until"] <= now
    failures = 1 if stale else doc.get("failures", 0) + 1
    locked = failures >= policy.lock_after
    doc.update(failures=0 if locked else failures, last_failure_at=now,
               locked_until=now + policy.lock_seconds if locked else 0)
    return doc, locked
