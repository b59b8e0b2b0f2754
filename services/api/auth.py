"""Authentication middleware: a bearer JWT or a desk session cookie on every request but the public paths.

The token is verified by :func:`services.core.auth.verify_token` (signature, expiry, user
still configured with that role) and checked against the revoked token ids.  Those are read
from ``revoked_tokens`` at most once per ``REVOCATION_TTL`` second (not once per request: the
busiest endpoints are read hundreds of times a second), and at once after a revocation through
this process, so a revocation takes effect on the very next call here and within a second in
every other process.  The caller becomes ``request[PRINCIPAL]``; the client address for the
audit trail is :func:`remote_of`.

A browser signed in at ``/signin`` sends the ``yilian_session`` cookie instead
(:mod:`services.core.sessions`): it gives the same :class:`Principal`, and a cookie-authorised
POST/PUT/PATCH/DELETE must carry the session's ``X-CSRF-Token`` (403 otherwise: another site can
make the browser send the cookie, never that header).  A page requested without a live session
is sent to ``/signin?next=<path>`` (303).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ..core.auth import AuthError, Principal, verify_token
from ..core.consortium import Consortium
from ..core.runtime import Runtime
from ..core.sessions import COOKIE, CSRF_HEADER, SessionPolicy, csrf_ok, expires_at, find_session
from ..core.store.port import Store
from ..core.users import UserDirectory
from ..core.http import PRINCIPAL, Problem

PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/api/v1/openapi.json",
                          "/metrics", "/dashboard",  # where things are, aggregates, a page with no data
                          "/signin"})  # the sign-in page
PUBLIC_PREFIXES = ("/desk/static/",)  # the desks' scripts and styles: no data
SESSION_PATH = "/api/v1/session"  # POST (sign in) is public; GET and DELETE need the session
PAGE_PREFIXES = ("/desk/", "/viewer")  # and "/desk": pages, sent to /signin without a session
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION = web.RequestKey("session", dict)  # the session document of a cookie-authorised request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REVOKE_PATH = "/api/v1/auth/revoke"
REVOCATION_TTL = 1.0  # seconds a process may go on accepting a token revoked by another process


class RevokedTokens:
    """The ids of revoked, not yet expired tokens, re-read from the store at most every ``ttl`` s.

    ``invalidate()`` (after a local revocation) makes the next check read again.  A read that
    started before an invalidation never counts as fresh, so a revocation is never missed.
    """

    def __init__(self, store: Store, *, ttl: float = REVOCATION_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.ttl, self.clock = store, ttl, clock
        self._ids: frozenset[str] = frozenset()
        self._fresh_until = float("-inf")
        self._generation = 0
        self._loading: asyncio.Future[frozenset[str]] | None = None
        self._loading_generation = -1

    def invalidate(self) -> None:
        self._generation += 1
        self._fresh_until = float("-inf")

    async def contains(self, token_id: str) -> bool:
        if self.clock() >= self._fresh_until:
            await self._reload()
        return token_id in self._ids

    async def _reload(self) -> None:
        # One read for all the requests that find the set stale at once.
        if self._loading is not None and self._loading_generation == self._generation:
            await asyncio.shield(self._loading)
            return
        generation, started = self._generation, self.clock()
        self._loading_generation = generation
        self._loading = asyncio.get_running_loop().create_future()
        loading = self._loading
        try:
            docs = await self.store.find("revoked_tokens", {"$or": [{"expires_at": None},
                                                                   {"expires_at": {"$gt": int(time.time())}}]})
        except BaseException as exc:
            loading.set_exception(exc)
            loading.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            if self._loading is loading:
                self._loading = None
        self._ids = frozenset(d["id"] for d in docs)
        if generation == self._generation:
            self._fresh_until = started + self.ttl
        loading.set_result(self._ids)


def unauthorized(why: str) -> Problem:
    return Problem(401, why, headers={
        "WWW-Authenticate": f'Bearer realm="yilian", error="invalid_token", error_description="{why}"'})


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise unauthorized("missing Authorization: Bearer token")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


class VerifiedTokens:
    """Tokens whose signature was checked, so a reader's every refresh does not check it again.

    A hit is used only until the token's ``exp`` and while the consortium still has its user
    with the same role, organisation and centre; anything else is verified from scratch.
    """

    def __init__(self, *, size: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.size, self.clock = size, clock
        self._seen: OrderedDict[tuple[str, str], Principal] = OrderedDict()

    def verify(self, token: str, secret: str, consortium: Consortium) -> Principal:
        key = (secret, token)
        hit = self._seen.get(key)
        if hit is not None:
            user = consortium.users.get(hit.user_id)
            if (hit.expires_at is not None and hit.expires_at > self.clock() and user is not None
                    and not user.disabled and (user.role, user.organization, user.centre) == (hit.role, hit.organization, hit.centre)):
                self._seen.move_to_end(key)
                return hit
            del self._seen[key]
        principal = verify_token(token, secret, consortium)
        self._seen[key] = principal
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return principal


def session_policy(rt: Runtime) -> SessionPolicy:
    return SessionPolicy(idle_seconds=rt.settings.session_idle_seconds, max_seconds=rt.settings.session_max_seconds)


def is_page(path: str) -> bool:
    return path == "/desk" or path.startswith(PAGE_PREFIXES)


def to_signin(request: web.Request) -> web.HTTPSeeOther:
    return web.HTTPSeeOther("/signin?next=" + quote(request.path_qs, safe="/"))


def auth_middleware(rt: Runtime, revoked: RevokedTokens | None = None, *,
                    clock: Callable[[], float] = time.time, directory: UserDirectory | None = None) -> Any:
    """``directory``: re-reads the users an admin changed (at most once a second) before a caller is checked."""
    secret: list[str] = []  # read once: in the embedded default it is a file under the data dir
    revoked = revoked or RevokedTokens(rt.store)
    directory = directory or UserDirectory(rt)
    verified = VerifiedTokens()
    policy = session_policy(rt)

    async def by_session(request: web.Request, session_id: str | None) -> Principal:
        doc = await find_session(rt.store, session_id, policy, clock()) if session_id else None
        user = rt.consortium.users.get(doc["user"]) if doc else None
        if user is None or user.disabled:
            if is_page(request.path) and request.method in SAFE_METHODS:
                raise to_signin(request)
            if not session_id:
                bearer(request)  # raises: the same 401 an API client always got
            raise unauthorized("session expired or signed out; sign in again at /signin")
        if request.method not in SAFE_METHODS and not csrf_ok(doc, request.headers.get(CSRF_HEADER)):
            raise Problem(403, f"a request made with the session cookie must carry the session's {CSRF_HEADER} "
                               "header (GET /api/v1/session gives it)", slug="csrf")
        request[SESSION] = doc
        return Principal(user.id, user.role, user.organization, user.centre, "session-" + doc["id"][:16],
                         int(expires_at(doc, policy)))

    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        if (request.path in PUBLIC_PATHS or request.method == "OPTIONS" or request.path.startswith(PUBLIC_PREFIXES)
                or (request.path == SESSION_PATH and request.method == "POST")):
            return await handler(request)
        await directory.refresh()
        if "Authorization" not in request.headers:
            request[PRINCIPAL] = await by_session(request, request.cookies.get(COOKIE))
            return await handler(request)
        token = bearer(request)
        if not secret:
            secret.append(rt.settings.secret(create=True))
        try:
            principal = verified.verify(token, secret[0], rt.consortium)
        except AuthError as exc:
            raise unauthorized(str(exc).replace('"', "'")) from None
        if await revoked.contains(principal.token_id):
            raise unauthorized("token revoked")
        request[PRINCIPAL] = principal
        if request.path == REVOKE_PATH:
            try:
                return await handler(request)
            finally:
                revoked.invalidate()  # effective on this process's very next request
        return await handler(request)

    return authenticate


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """``"10.0.0.1, 192.168.0.0/24"`` -> networks; a bad entry is a startup error."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    try:
        return tuple(ipaddress.ip_network(t, strict=False) for t in items)
    except ValueError as exc:
        raise SystemExit(f"YILIAN_TRUSTED_PROXIES: {exc}") from None


def _trusted(address: str | None, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def remote_of(request: web.Request, proxies: tuple[Network, ...]) -> str | None:
    """The client address: the peer, or — only when the peer is a trusted proxy — the
    right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy."""
    peer = request.remote
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer
