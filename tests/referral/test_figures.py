"""The referral figures are a pure fold over the event log: the same events give the same
numbers, whatever the store; a slot released unused and a no-show count where they belong."""

from __future__ import annotations

from services.core.localtime import LocalTime
from services.monitor.referrals import fold


def ev(type_: str, rid: str, direction: str = "up", at: str = "2030-01-31T17:00:00.000Z", **data):
    return (type_, {"referral_id": rid, "direction": direction, "organization": "chengguan-thc" if direction == "up"
                    else "county-hospital", "target_organization": "county-hospital" if direction == "up"
                    else "chengguan-thc", "requested_at": "2030-01-31T16:30:00.000Z", "at": at, **data})


SLOT = {"id": "s1", "organization": "county-hospital", "department": "心内科", "kind": "outpatient"}


def test_fold_months_are_local_rates_times_slots_and_recognition():
    events = [
        ("referral.slots_published", {"organization": "county-hospital", "department": "心内科", "slots": [SLOT, SLOT]}),
        ev("referral.requested", "a"),  # 2030-02-01 00:30 in China: a February referral
        ev("referral.booked", "a", slot=SLOT),
        ev("referral.accepted", "a", at="2030-01-31T17:30:00.000Z"),
        ev("referral.no_show", "a", slot=SLOT),
        ev("referral.requested", "b"),
        ev("referral.accepted", "b", at="2030-01-31T18:30:00.000Z"),
        ev("referral.arrived", "b", at="2030-02-01T16:30:00.000Z", slot=None),
        ev("referral.requested", "c", direction="down"),
        ("referral.slot_released", {"organization": "county-hospital", "department": "心内科", "slot_id": "s2"}),
        ("recognition.decided", {"decision": "use_prior", "item": "ct-chest"}),
        ("recognition.decided", {"decision": "repeat", "reason": "condition_changed", "item": "ct-chest"}),
        ("recognition.decided", {"decision": "repeat", "reason": "emergency", "item": "dr-chest"}),
    ]
    figures = fold(events, LocalTime.named("Asia/Shanghai"))
    assert fold(events, LocalTime.named("Asia/Shanghai")) == figures  # recomputable
    county = next(r for r in figures["sites"] if r["organization"] == "county-hospital")
    assert county["month"] == "2030-02" and county["up_received"] == 2 and county["down_sent"] == 1
    assert county["down_referral_rate"] == 0.5 and county["no_shows"] == 1
    (times,) = figures["times"]
    assert times["to_acceptance"] == {"count": 2, "median_seconds": 5400, "p90_seconds": 7200}
    assert times["to_arrival"] == {"count": 1, "median_seconds": 86400, "p90_seconds": 86400}
    (slots,) = figures["slots"]
    assert slots == {"organization": "county-hospital", "department": "心内科", "published": 2, "booked": 1, "used": 0,
                     "released_unused": 1, "no_shows": 1, "use_rate": 0.0}
    rec = figures["recognition"]
    assert (rec["held"], rec["used_prior"], rec["repeats_avoided"], rec["repeated"]) == (3, 1, 1, 2)
    assert rec["by_reason"] == {"condition_changed": 1, "emergency": 1}
    assert rec["by_item"]["ct-chest"] == {"held": 2, "used_prior": 1, "repeated": 1}
