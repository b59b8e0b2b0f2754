"""The API's cache of verified tokens: a hit never outlives the token's expiry or its user."""

from __future__ import annotations

import dataclasses
import time

import jwt
import pytest

from services.api.auth import VerifiedTokens
from services.core.auth import AuthError, issue_token
from services.core.consortium import load_consortium

from ..support import ManualClock

SECRET = "test-secret-not-for-production-0123456789"


@pytest.fixture(scope="module")
def consortium():
    return load_consortium("deploy/consortium.example.yaml")


def test_a_verified_token_is_not_verified_again(consortium, monkeypatch):
    token = issue_token(consortium, "dr-wang", SECRET)
    cache = VerifiedTokens()
    first = cache.verify(token, SECRET, consortium)
    calls = []
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(1))
    assert cache.verify(token, SECRET, consortium) is first and not calls


def test_a_cached_token_is_verified_again_once_past_its_expiry(consortium, monkeypatch):
    clock = ManualClock(time.time())
    token = issue_token(consortium, "dr-wang", SECRET, ttl=60)
    cache = VerifiedTokens(clock=clock)
    first = cache.verify(token, SECRET, consortium)
    clock.now = first.expires_at  # exp is exclusive, as PyJWT has it

    def expired(*args, **kwargs):
        raise jwt.ExpiredSignatureError("Signature has expired")
    monkeypatch.setattr(jwt, "decode", expired)
    with pytest.raises(AuthError, match="token expired"):
        cache.verify(token, SECRET, consortium)
    assert not cache._seen


def test_a_user_removed_or_changed_in_the_consortium_is_refused_though_cached(consortium):
    token = issue_token(consortium, "dr-wang", SECRET)
    cache = VerifiedTokens()
    cache.verify(token, SECRET, consortium)
    users = dict(consortium.users)
    users["dr-wang"] = dataclasses.replace(users["dr-wang"], centre="city-imaging")
    moved = dataclasses.replace(consortium, users=users)
    assert cache.verify(token, SECRET, moved).centre == "city-imaging"  # re-verified: the new centre
    del users["dr-wang"]
    gone = dataclasses.replace(consortium, users=users)
    with pytest.raises(AuthError, match="no longer in the consortium"):
        cache.verify(token, SECRET, gone)


def test_bad_tokens_are_never_cached_and_the_size_is_bounded(consortium):
    cache = VerifiedTokens(size=3)
    with pytest.raises(AuthError):
        cache.verify("not-a-jwt", SECRET, consortium)
    with pytest.raises(AuthError):
        cache.verify(issue_token(consortium, "dr-wang", "another-secret-not-for-production-0123456789"), SECRET, consortium)
    assert not cache._seen
    for _ in range(5):
        cache.verify(issue_token(consortium, "dr-li", SECRET), SECRET, consortium)
    assert len(cache._seen) == 3


def test_a_reader_given_another_centre_is_verified_again_and_reads_for_it(consortium):
    token = issue_token(consortium, "dr-li", SECRET)
    cache = VerifiedTokens()
    assert cache.verify(token, SECRET, consortium).centre_ids == ("county-imaging",)
    users = dict(consortium.users)
    users["dr-li"] = dataclasses.replace(users["dr-li"], centres=("county-imaging", "city-imaging"))
    more = dataclasses.replace(consortium, users=users)
    who = cache.verify(token, SECRET, more)
    assert who.centre_ids == ("county-imaging", "city-imaging") and who.reads_for("city-imaging")
