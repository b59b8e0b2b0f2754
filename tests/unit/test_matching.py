"""PS3.4 C.2.2.2 attribute matching, without I/O."""

from __future__ import annotations

import pytest

from services.pacs_gateway.matching import MatchingError, matches_all, name_forms, normalize_name, parse


@pytest.mark.parametrize("vr,query", [("PN", ""), ("PN", None), ("LO", "*"), ("DA", ""), ("DA", "-"),
                                      ("UI", ""), ("CS", "\\")])
def test_universal_matching_matches_everything_even_empty(vr, query):
    m = parse(vr, query)
    assert m.kind == "universal"
    assert m.matches(None) and m.matches("") and m.matches("X")
    assert m.store_condition() is None


def test_single_value_is_exact_and_case_sensitive_except_names():
    assert parse("LO", "CT ABDOMEN").matches("CT ABDOMEN")
    assert not parse("LO", "CT ABDOMEN").matches("ct abdomen")
    assert not parse("LO", "CT").matches("CT ABDOMEN")
    assert parse("CS", "CT").store_condition() == "CT"
    assert parse("SH", "A123").matches("A123 ")  # trailing padding is not significant


def test_empty_stored_value_matches_only_universal():
    assert not parse("LO", "X").matches(None)
    assert not parse("LO", "*X*").matches("")
    assert not parse("DA", "20240101-").matches(None)


def test_person_names_match_case_insensitively():
    m = parse("PN", "zhang*")
    assert m.kind == "wildcard"
    assert m.matches("ZHANG^SAN") and m.matches("Zhang^Si")
    assert not m.matches("LI^ZHANG")
    assert parse("PN", "zhang^san").matches("ZHANG^SAN")
    assert parse("PN", "ZHANG^SAN").matches("Zhang^San^^^")  # trailing empty components
    assert not parse("PN", "ZHANG^SA").matches("ZHANG^SAN")


def test_chinese_names_match_with_wildcards_and_per_component_group():
    assert parse("PN", "张*").matches("张^三")
    assert parse("PN", "张^三").matches("张^三")
    assert not parse("PN", "李*").matches("张^三")
    assert parse("PN", "张?").matches("张三")
    # Alphabetic=Ideographic: the query may name either group.
    assert parse("PN", "张*").matches("Zhang^San=张^三")
    assert parse("PN", "zhang^san").matches("Zhang^San=张^三")
    assert parse("PN", "Zhang^San=张^三").matches("ZHANG^SAN=张^三")
    assert name_forms("Zhang^San=张^三") == ["ZHANG^SAN=张^三", "ZHANG^SAN", "张^三"]
    assert normalize_name("a^b^^=c^^") == "A^B=C"


def test_wildcards_star_and_question_mark():
    m = parse("LO", "CH?ST*")
    assert m.matches("CHEST PA") and m.matches("CHIST")
    assert not m.matches("CHST") and not m.matches("xCHEST")
    assert parse("LO", "*胸*").matches("胸部正位")
    assert parse("LO", "*.*").matches("a.b") and not parse("LO", "*.*").matches("ab")  # regex chars are literal
    assert parse("SH", "ACC*").store_condition() == {"$prefix": "ACC"}
    assert parse("SH", "*ACC").store_condition() is None
    assert parse("PN", "ZHANG*").store_condition() is None  # group matching: decided in Python


def test_wildcards_are_literal_for_uids_and_dates():
    assert parse("UI", "1.2.3*").kind == "single"
    assert not parse("UI", "1.2.3*").matches("1.2.3.4")
    with pytest.raises(MatchingError):
        parse("DA", "2024*")


def test_date_ranges():
    closed = parse("DA", "20240101-20240131")
    assert closed.kind == "range"
    assert closed.matches("20240101") and closed.matches("20240115") and closed.matches("20240131")
    assert not closed.matches("20231231") and not closed.matches("20240201")
    assert closed.store_condition() == {"$gte": "20240101", "$lte": "20240131"}
    until = parse("DA", "-20240131")
    assert until.matches("19990101") and not until.matches("20240201")
    assert until.store_condition() == {"$lte": "20240131"}
    since = parse("DA", "20240101-")
    assert since.matches("20991231") and not since.matches("20231231")
    assert parse("DA", "2024.01.01-2024.01.31").matches("20240110")  # ACR-NEMA dates
    assert parse("DA", "20240115").matches("20240115")
    assert parse("DA", "20240115").store_condition() == "20240115"
    assert not closed.matches("not a date")


def test_bad_ranges_and_dates_are_errors():
    for bad in ("2024-01-01", "20240231x", "20240201-20240101", "abc"):
        with pytest.raises(MatchingError):
            parse("DA", bad)
    with pytest.raises(MatchingError):
        parse("TM", "25:00-x")


def test_time_ranges_compare_at_the_precision_given():
    m = parse("TM", "0800-1030")
    assert m.matches("080000") and m.matches("103059.999") and m.matches("1030")
    assert not m.matches("075959") and not m.matches("103100")
    assert parse("TM", "-09").matches("095959") and not parse("TM", "-09").matches("100000")
    assert parse("TM", "10:30-").matches("1031")
    assert m.store_condition() is None


def test_datetime_ranges_ignore_utc_offsets():
    m = parse("DT", "20240101083000-20240101120000")
    assert m.matches("20240101090000+0800")
    assert not m.matches("20240101130000")
    assert parse("DT", "20240101+0800").kind == "single"
    assert parse("DT", "20240101-").matches("20250101")


def test_list_of_uids():
    m = parse("UI", "1.2.3\\1.2.4")
    assert m.kind == "list"
    assert m.matches("1.2.4") and not m.matches("1.2.5")
    assert m.store_condition() == {"$in": ["1.2.3", "1.2.4"]}
    assert parse("UI", ["1.2.3", "1.2.4"]).matches("1.2.3")
    assert parse("UI", "1.2.3\\").kind == "single"


def test_lists_of_other_values_and_multi_valued_stored_attributes():
    mods = parse("CS", "CT\\MR")
    assert mods.matches(["DX", "MR"]) and not mods.matches(["DX", "US"])
    assert parse("CS", "CT").matches(["CT", "SR"])
    assert parse("PN", "张*\\li*").matches("LI^SI")
    assert parse("PN", "张*\\li*").store_condition() is None


def test_numbers_compare_by_value():
    assert parse("IS", "3").matches(3) and parse("IS", "03").matches("3")
    assert not parse("IS", "3").matches("4")
    assert not parse("IS", "3").matches("x")


def test_matches_all_combines_keys():
    record = {"PatientName": "张^三", "StudyDate": "20240115", "ModalitiesInStudy": ["CT"]}
    keys = [("PatientName", parse("PN", "张*")), ("StudyDate", parse("DA", "20240101-20240131")),
            ("ModalitiesInStudy", parse("CS", "CT"))]
    assert matches_all(keys, record)
    assert not matches_all(keys + [("AccessionNumber", parse("SH", "A1"))], record)
