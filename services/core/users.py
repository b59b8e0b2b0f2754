"""The users of the desks: the consortium file's, as an admin changed them, and those he created.

The file's users are the initial set and keep their ids.  An admin's changes (role,
organisation, centre, title, disabled ...) and the users he creates are kept in the
``users`` collection (the same document as the user's password hash) and laid over the file
by :func:`merged`: pure, so every process computes the same directory from the same
documents.  :class:`UserDirectory` re-reads them at most once a second (and at once after a
change made through this process) and replaces ``rt.consortium`` with the merged one, so a
disabled user's tokens and sessions stop at his next request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from .consortium import ID, LICENCE, ROLES, TITLES, Consortium, User
from .store.port import Doc

USERS = "users"
PROFILE = ("name", "role", "organization", "centre", "title", "specialty", "licence_number", "disabled")
FILE_KEY = "users.file_consortium"  # rt.shared: the consortium as loaded from the file


class UserRejected(ValueError):
    """A user document that does not fit the consortium; the message says which field and why."""


def profile_of(doc: Doc) -> dict[str, Any]:
    return {k: doc[k] for k in PROFILE if k in doc}


def merged(file: Consortium, docs: list[Doc]) -> Consortium:
    """``file`` with every stored profile laid over its users (a document with only a password
    changes nothing); documents that no longer fit the file (a deleted centre) are skipped."""
    users = dict(file.users)
    for doc in sorted(docs, key=lambda d: d["id"]):
        profile = profile_of(doc)
        if not profile:
            continue
        base = users.get(doc["id"])
        try:
            users[doc["id"]] = build(file, doc["id"], profile, base)
        except UserRejected:
            continue
    return dataclasses.replace(file, users=users)


def build(consortium: Consortium, user_id: str, profile: dict[str, Any], base: User | None) -> User:
    """``base`` (or a new user) with ``profile``, checked against the consortium as the file loader checks it."""
    if base is None:
        if not ID.match(user_id or ""):
            raise UserRejected(f"user id {user_id!r} must be lower-case letters, digits, '-' or '_' (at most 64)")
        missing = [k for k in ("name", "role", "organization") if not profile.get(k)]
        if missing:
            raise UserRejected(f"a new user needs {', '.join(missing)}")
        base = User(user_id, profile["name"], profile["role"], profile["organization"])
    fields = {**{k: getattr(base, k) for k in PROFILE}, **profile}
    if not isinstance(fields["name"], str) or not fields["name"].strip():
        raise UserRejected("name must not be empty")
    if fields["role"] not in ROLES:
        raise UserRejected(f"role must be one of {', '.join(ROLES)}, not {fields['role']!r}")
    if fields["organization"] not in consortium.organizations:
        raise UserRejected(f"unknown organization {fields['organization']!r}")
    centre = fields["centre"]
    if fields["role"] in ("reader", "coordinator") and not centre:
        raise UserRejected(f"a {fields['role']} needs a centre")
    if centre is not None:
        if centre not in consortium.centres:
            raise UserRejected(f"unknown centre {centre!r}")
        if consortium.centres[centre].organization != fields["organization"]:
            raise UserRejected(f"centre {centre!r} is not part of organization {fields['organization']!r}")
    if fields["title"] is not None and fields["title"] not in TITLES:
        raise UserRejected(f"title must be one of {', '.join(TITLES)}")
    if fields["licence_number"] is not None and not LICENCE.match(str(fields["licence_number"])):
        raise UserRejected("licence_number must be 6 to 30 letters or digits")
    lead = base.lead and centre is not None
    return dataclasses.replace(base, **{**fields, "name": fields["name"].strip(), "disabled": bool(fields["disabled"]),
                                        "lead": lead})


class UserDirectory:
    """Keeps ``rt.consortium``'s users equal to the file's merged with the ``users`` collection."""

    def __init__(self, rt: Any, *, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rt, self.ttl, self.clock = rt, ttl, clock
        self.file: Consortium = rt.shared.setdefault(FILE_KEY, rt.consortium)
        self._fresh_until = float("-inf")
        self._seen: tuple[Any, ...] | None = None
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._fresh_until = float("-inf")

    async def refresh(self) -> None:
        if self.clock() < self._fresh_until:
            return
        async with self._lock:
            if self.clock() < self._fresh_until:
                return
            started = self.clock()
            docs = await self.rt.store.find(USERS)
            seen = tuple(sorted((d["id"], tuple(sorted(profile_of(d).items()))) for d in docs))
            if seen != self._seen:
                self.rt.consortium = merged(self.file, docs)
                self._seen = seen
            self._fresh_until = started + self.ttl
