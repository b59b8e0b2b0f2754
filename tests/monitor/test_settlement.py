"""Settlement without I/O: the fee schedule as the consortium file gives it, and the ledger's rules
(one entry per report, the latest grade counts, a closed month is immutable)."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest

from services.core.consortium import ConfigError, load_consortium, parse_consortium
from services.core.events import Event
from services.core.fees import fen, yuan
from services.monitor import facts

from ..support import EXAMPLE_CONSORTIUM

CONSORTIUM = load_consortium(EXAMPLE_CONSORTIUM)
CAL = facts.Calendar(ZoneInfo("Asia/Shanghai"))


def signed(report: str, at: str, *, modality: str = "CT", addendum_of: str | None = None) -> Event:
    return Event("report.signed", subject="rr-1", data={
        "request_id": "rr-1", "report_id": report, "study_uid": "1.2.3", "organization": "chengguan-thc",
        "centre": "county-imaging", "kind": "imaging", "priority": "routine", "reader_id": "dr-wang",
        "signed_at": at, "addendum_of": addendum_of, "modality": modality, "critical": False})


def feed(docs: dict, event: Event, closed: set[str] = frozenset(), entries=None) -> list:
    current = {k: docs.get(k) for k in facts.keys(event)}
    out = facts.apply(event, current, CONSORTIUM, CAL, set(closed), entries)
    for collection, doc in out:
        docs[(collection, doc["id"])] = doc
    return out


def test_the_fee_schedule_of_the_example():
    fees = CONSORTIUM.settlement
    ct = fees.fee_for("imaging", "CT", date(2026, 11, 3))
    assert (ct.fee_fen, ct.split()) == (8000, (6000, 2000))
    assert fees.fee_for("imaging", "XA", date(2026, 11, 3)).modalities == ()  # any modality
    assert fees.fee_for("imaging", "CT", date(2025, 12, 31)) is None  # before it is valid
    assert fees.fee_for("addendum", None, date(2026, 11, 3)) is None  # free unless priced
    assert (fen("30.5"), yuan(3050), yuan(-1505)) == (3050, "30.50", "-15.05")
    with pytest.raises(ValueError):
        fen("1.005")


@pytest.mark.parametrize("row,message", [
    ('{service: imaging, fee: "1.001", reading_share: "0.5", valid_from: 2026-01-01}', "at most two decimals"),
    ('{service: imaging, fee: "10", reading_share: "1.5", valid_from: 2026-01-01}', "fraction from 0 to 1"),
    ('{service: ecg, modalities: [ECG], fee: "10", reading_share: "0.5", valid_from: 2026-01-01}', "only imaging"),
    ('{service: imaging, fee: "10", reading_share: "0.5", valid_from: 2026-13-01}', "must be a date"),
    ('{service: xray, fee: "10", reading_share: "0.5", valid_from: 2026-01-01}', "must be one of"),
])
def test_a_bad_fee_row_names_its_line(row, message):
    text = EXAMPLE_CONSORTIUM.read_text("utf-8").replace(
        "    - {service: consultation,", f"    - {row}\n    - {{service: consultation,", 1)
    with pytest.raises(ConfigError, match=message) as error:
        parse_consortium(text, source="c.yaml")
    assert "c.yaml:" in str(error.value)


def test_overlapping_fees_are_refused():
    text = EXAMPLE_CONSORTIUM.read_text("utf-8").replace(
        "    - {service: consultation,",
        '    - {service: ecg, fee: "20.00", reading_share: "0.6", valid_from: 2026-06-01}\n'
        "    - {service: consultation,", 1)
    with pytest.raises(ConfigError, match="overlaps"):
        parse_consortium(text, source="c.yaml")
    # one ending before the next starts is a price change, not an overlap
    text = EXAMPLE_CONSORTIUM.read_text("utf-8").replace(
        '{service: ecg, fee: "15.00", reading_share: "0.60", valid_from: 2026-01-01}',
        '{service: ecg, fee: "15.00", reading_share: "0.60", valid_from: 2026-01-01, valid_to: 2026-05-31}\n'
        '    - {service: ecg, fee: "20.00", reading_share: "0.60", valid_from: 2026-06-01}', 1)
    fees = parse_consortium(text).settlement
    assert fees.fee_for("ecg", "ECG", date(2026, 5, 31)).fee_fen == 1500
    assert fees.fee_for("ecg", "ECG", date(2026, 6, 1)).fee_fen == 2000


def test_one_entry_per_report_and_a_closed_month_is_immutable():
    docs: dict = {}
    # 23:30 Beijing time on 30 November is still November there (15:30 UTC)
    feed(docs, signed("rp-1", "2026-11-30T15:30:00.000Z"))
    entry = docs[(facts.LEDGER, "report:rp-1")]
    assert (entry["month"], entry["posted_month"], entry["fee_fen"], entry["reading"]) == (
        "2026-11", "2026-11", 8000, "county-hospital")
    assert feed(docs, signed("rp-1", "2026-11-30T15:30:00.000Z")) == []  # redelivered: nothing new
    assert docs[(facts.LEDGER, "report:rp-1")] is entry
    # 16:30 UTC is 1 December in Beijing
    feed(docs, signed("rp-2", "2026-11-30T16:30:00.000Z", modality="DX"))
    assert docs[(facts.LEDGER, "report:rp-2")]["month"] == "2026-12"
    closed = facts.apply(Event("settlement.month_closed", subject="2026-11", data={
        "month": "2026-11", "actor": "admin", "closed_at": "2026-12-02T00:00:00.000Z"}),
        {(facts.MONTHS, "2026-11"): None}, CONSORTIUM, CAL, set(), [entry])[0][1]
    assert closed["statement"][0]["fee_fen"] == 8000 and closed["entry_ids"] == ["report:rp-1"]
    # late: released in November, seen after the close; an addendum; both go to December
    feed(docs, signed("rp-3", "2026-11-29T02:00:00.000Z", modality="US"), closed={"2026-11"})
    late = docs[(facts.LEDGER, "report:rp-3")]
    assert (late["month"], late["posted_month"], late["late"], late["fee_fen"]) == ("2026-11", "2026-12", True, 4000)
    feed(docs, signed("rp-4", "2026-12-01T02:00:00.000Z", addendum_of="rp-1"), closed={"2026-11"})
    addendum = docs[(facts.LEDGER, "report:rp-4")]
    assert (addendum["type"], addendum["fee_fen"], addendum["addendum_of"]) == ("addendum", 0, "report:rp-1")


def test_the_latest_grade_counts_whatever_order_it_arrives_in():
    def graded(grade: str, at: str) -> Event:
        return Event("study.quality_graded", subject="rr-1", data={
            "reading_id": "rr-1", "study_instance_uid": "1.2.3", "organization": "chengguan-thc", "modality": "DX",
            "operators": ["王技师"], "grade": grade, "reasons": [], "reader": "dr-wang", "centre": "county-imaging",
            "graded_at": at})
    docs: dict = {}
    feed(docs, graded("C", "2026-11-02T00:00:00.000Z"))
    feed(docs, graded("reject", "2026-11-01T00:00:00.000Z"))  # older, arriving late
    assert docs[(facts.GRADINGS, "rr-1")]["grade"] == "C"
