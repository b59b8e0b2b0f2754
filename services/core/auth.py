"""Bearer tokens (JWT, HS256) for the users of the consortium, and who they are."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from .consortium import Consortium
from .events import utc_now
from .store.port import DuplicateKey, Store, Transaction

ISSUER = "yilian"
ALGORITHM = "HS256"


class AuthError(Exception):
    """The credentials are missing, malformed, expired, revoked or for an unknown user."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of an API request."""

    user_id: str
    role: str
    organization: str
    centre: str | None
    token_id: str
    expires_at: int | None = None  # the token's ``exp`` (seconds since the epoch)


def issue_token(consortium: Consortium, user_id: str, secret: str, *, ttl: int = 8 * 3600) -> str:
    user = consortium.users.get(user_id)
    if user is None:
        raise AuthError(f"no user {user_id!r} in consortium {consortium.id!r}")
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": user.id, "role": user.role, "org": user.organization,
              "centre": user.centre, "iat": now, "exp": now + ttl, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str, secret: str, consortium: Consortium) -> Principal:
    """Check signature, expiry and that the user still exists with the same role and organisation."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "jti"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    user = consortium.users.get(claims["sub"])
    if user is None or user.role != claims.get("role") or user.organization != claims.get("org"):
        raise AuthError("token's user is no longer in the consortium with that role")
    if user.disabled:
        raise AuthError("token's user is disabled")
    return Principal(user.id, user.role, user.organization, user.centre, claims["jti"], claims["exp"])


# --- revocation: a token id in ``revoked_tokens`` is refused until it would have expired anyway ---

async def revoke(tx: Transaction, token_id: str, *, by: str, expires_at: int | None = None,
                 reason: str | None = None) -> bool:
    """Record ``token_id`` as revoked; False if it already was."""
    try:
        await tx.insert("revoked_tokens", {"id": token_id, "revoked_at": utc_now(), "revoked_by": by,
                                           "expires_at": expires_at, "reason": reason})
    except DuplicateKey:
        return False
    return True


async def is_revoked(store: Store, token_id: str) -> bool:
    return await store.get("revoked_tokens", token_id) is not None
