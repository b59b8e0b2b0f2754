"""The consultation state machine and scheduling rules, without I/O."""

from __future__ import annotations

import pytest

from services.workflow.consultation import model
from services.workflow.errors import IllegalTransition, Invalid
from services.workflow.leases import parse_iso


def doc(state: str) -> dict:
    return {"state": state, "version": 3, "history": []}


def test_happy_path_and_history():
    d = doc("requested")
    for action, state in (("triage", "triaged"), ("schedule", "scheduled"), ("reschedule", "scheduled"),
                          ("remind", "scheduled"), ("start", "in_progress"), ("add_note", "in_progress"),
                          ("conclude", "concluded")):
        d = {**d, **model.transition(d, action, at="t", by="u")}
        assert d["state"] == state
    assert d["version"] == 10 and [h["action"] for h in d["history"]][-1] == "conclude"


@pytest.mark.parametrize("state,action", [
    ("scheduled", "withdraw"), ("requested", "schedule"), ("triaged", "start"), ("scheduled", "conclude"),
    ("concluded", "cancel"), ("withdrawn", "triage"), ("no_show", "start"), ("in_progress", "reschedule"),
    ("cancelled", "add_note")])
def test_illegal_transitions_name_state_and_action(state, action):
    with pytest.raises(IllegalTransition) as err:
        model.transition(doc(state), action, at="t", by="u")
    assert f"cannot {action.replace('_', ' ')} a consultation in state '{state}'" in str(err.value)


def test_no_show_can_be_rescheduled_or_cancelled():
    for action, state in (("reschedule", "scheduled"), ("cancel", "cancelled")):
        assert model.transition(doc("no_show"), action, at="t", by="u")["state"] == state


def test_overlapping_slots_share_a_booking_cell_and_adjacent_ones_do_not():
    t = parse_iso("2030-01-02T09:00:00Z")
    a = set(model.booking_cells(t, t + 3600))
    assert len(a) == 12
    assert a & set(model.booking_cells(t + 3300, t + 4200))  # 09:55-10:10 overlaps
    assert not a & set(model.booking_cells(t + 3600, t + 4200))  # 10:00-10:10 is adjacent


def test_slot_rules():
    t = parse_iso("2030-01-02T09:00:00Z")
    model.check_slot(t, t + 1800, t - 1)
    for start, end, now in ((t, t, t - 1), (t, t + 9 * 3600, t - 1), (t, t + 1800, t + 1), (t + 60, t + 1800, t)):
        with pytest.raises(Invalid):
            model.check_slot(start, end, now)


def test_recommendations_are_validated_and_rendered():
    up = model.recommendations("up_refer", None, {"hospital": "示范市第一人民医院", "department": "心内科"}, "2030-02-01")
    assert up["referral"] == {"hospital": "示范市第一人民医院", "department": "心内科"}
    assert "示范市第一人民医院 心内科" in up["text"] and "2030-02-01" in up["text"]
    local = model.recommendations("manage_locally", "继续降压治疗", None, None)
    assert local["referral"] is None and "继续降压治疗" in local["text"]
    for bad in (("up_refer", None, None, None), ("manage_locally", "", None, None), ("transfer", "x", None, None),
                ("manage_locally", "x", {"hospital": "a", "department": "b"}, None),
                ("manage_locally", "x", None, "next week")):
        with pytest.raises(Invalid):
            model.recommendations(*bad)


def test_meeting_url():
    assert model.meeting_url("https://m.example/{consultation_id}", "cs-1") == "https://m.example/cs-1"
    assert model.meeting_url(None, "cs-1") is None
