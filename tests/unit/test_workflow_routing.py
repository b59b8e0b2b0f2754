"""Routing to a centre, SLA-aware overflow and modality choice, without I/O."""

from __future__ import annotations

import dataclasses
import math

import pytest

from services.workflow import routing
from services.workflow.errors import Invalid
from services.workflow.routing import CentreLoad


def test_finish_time_from_queue_and_readers():
    assert CentreLoad("c", ahead=7, readers=2, capacity_per_reader_per_hour=8).finish_seconds() == 1800
    assert math.isinf(CentreLoad("c", ahead=0, readers=0, capacity_per_reader_per_hour=8).finish_seconds())


def test_routed_centre_kept_when_it_meets_the_sla():
    d = routing.choose([CentreLoad("county", 3, 2, 8), CentreLoad("city", 0, 1, 10)], 1800)
    assert (d.centre, d.overflow, d.overflow_reason) == ("county", False, None)


def test_overflow_when_the_routed_centre_would_miss():
    d = routing.choose([CentreLoad("county", 8, 2, 8), CentreLoad("city", 0, 1, 10)], 1800)
    assert d.centre == "city" and d.routed_centre == "county" and d.overflow
    assert "county would finish in 34 min" in d.overflow_reason and "SLA is 30 min" in d.overflow_reason


def test_no_reader_on_duty_overflows():
    d = routing.choose([CentreLoad("county", 0, 0, 8), CentreLoad("city", 0, 1, 10)], 1800)
    assert d.centre == "city" and "no reader on duty" in d.overflow_reason


def test_least_late_when_nobody_meets_it():
    d = routing.choose([CentreLoad("county", 100, 1, 8), CentreLoad("city", 20, 1, 10)], 1800)
    assert d.centre == "city" and "least late" in d.overflow_reason
    d = routing.choose([CentreLoad("county", 20, 1, 8), CentreLoad("city", 100, 1, 10)], 1800)
    assert d.centre == "county" and not d.overflow


def test_centres_for_uses_the_most_specific_route(consortium):
    assert routing.centres_for(consortium, "zhangzhuang-vc", "ecg", "ECG") == ["county-ecg", "city-ecg"]
    assert routing.centres_for(consortium, "chengguan-thc", "imaging", "CT") == ["county-imaging", "city-imaging"]
    assert routing.centres_for(consortium, "city-hospital", "imaging", "CT") == ["city-imaging"]
    # A modality the county does not read falls through to the catch-all route of the city.
    assert routing.centres_for(consortium, "chengguan-thc", "imaging", "XYZ") == ["city-imaging"]
    with pytest.raises(Invalid, match="no reading centre"):
        routing.centres_for(dataclasses.replace(consortium, routes=()), "chengguan-thc", "imaging", "CT")


def test_reading_modality_skips_reports(consortium):
    assert routing.reading_modality(consortium, "chengguan-thc", "imaging", ["SR", "CT"]) == "CT"
    assert routing.reading_modality(consortium, "zhangzhuang-vc", "ecg", ["ECG"]) == "ECG"


def test_on_duty_readers(consortium):
    assert routing.on_duty_readers(consortium, "county-imaging") == 2
    assert routing.on_duty_readers(consortium, "city-imaging") == 1
