"""The reading request state machine and worklist order, without I/O."""

from __future__ import annotations

import pytest

from services.workflow import model
from services.workflow.errors import IllegalTransition

AT = "2026-11-23T10:00:00.000Z"


def doc(state: str, **kw) -> dict:
    return {"id": "rr-1", "state": state, "version": 3, "history": [], **kw}


@pytest.mark.parametrize("state,action,target", [
    ("requested", "route", "queued"), ("queued", "claim", "claimed"), ("claimed", "save_draft", "draft"),
    ("draft", "save_draft", "draft"), ("draft", "sign", "signed"), ("claimed", "sign", "signed"),
    ("claimed", "expire_lease", "queued"), ("draft", "release", "queued"), ("draft", "escalate", "escalated"),
    ("claimed", "return", "returned"), ("queued", "cancel", "cancelled"), ("requested", "cancel", "cancelled"),
    ("queued", "move", "queued"), ("signed", "addendum", "signed")])
def test_legal_transitions(state, action, target):
    changes = model.transition(doc(state), action, at=AT, by="u")
    assert changes["state"] == target
    assert changes["version"] == 4
    assert changes["history"][-1] == {"action": action, "state": target, "at": AT, "by": "u"}


@pytest.mark.parametrize("state,action", [
    ("requested", "claim"), ("claimed", "claim"), ("claimed", "cancel"), ("draft", "cancel"),
    ("signed", "sign"), ("signed", "cancel"), ("cancelled", "claim"), ("queued", "sign"),
    ("queued", "escalate"), ("returned", "route"), ("escalated", "save_draft"), ("claimed", "move"),
    ("queued", "addendum")])
def test_illegal_transitions_name_state_and_action(state, action):
    d = doc(state)
    with pytest.raises(IllegalTransition) as err:
        model.transition(d, action, at=AT, by="u")
    assert state in str(err.value) and action in str(err.value)
    assert d == doc(state)  # nothing changed


def test_leaving_a_held_state_drops_the_lease():
    changes = model.transition(doc("claimed", claimed_by="dr-wang", lease_expires_at=AT), "release", at=AT, by="u")
    assert changes["claimed_by"] is None and changes["lease_expires_at"] is None


def test_boost_rank_follows_the_configured_order():
    boosts = ("green_channel", "signed_resident")
    ranks = {(g, s): model.boost_rank(boosts, green_channel="胸痛" if g else None, signed_resident=s)
             for g in (True, False) for s in (True, False)}
    assert ranks[(True, True)] < ranks[(True, False)] < ranks[(False, True)] < ranks[(False, False)]
    reversed_ranks = model.boost_rank(("signed_resident", "green_channel"), green_channel=None, signed_resident=True)
    assert reversed_ranks < model.boost_rank(("signed_resident", "green_channel"), green_channel="卒中",
                                             signed_resident=False)


def test_worklist_key_orders_priority_then_boost_then_deadline():
    docs = [
        {"id": "a", "priority_rank": 2, "boost_rank": 0, "deadline": "2026-01-01T00:00:00.000Z"},
        {"id": "b", "priority_rank": 0, "boost_rank": 3, "deadline": "2026-01-03T00:00:00.000Z"},
        {"id": "c", "priority_rank": 2, "boost_rank": 3, "deadline": "2025-12-01T00:00:00.000Z"},
        {"id": "d", "priority_rank": 0, "boost_rank": 3, "deadline": "2026-01-02T00:00:00.000Z"},
    ]
    assert [d["id"] for d in sorted(docs, key=model.worklist_key)] == ["d", "b", "a", "c"]


def test_report_validation():
    assert model.validate_report("肺纹理增多", "未见明显异常", False, None) == []
    assert model.validate_report("", " ", False, None) == ["findings must not be empty",
                                                             "impression must not be empty"]
    assert model.validate_report("x", "y", True, None) == ["a critical finding (危急值) needs a critical_category"]
