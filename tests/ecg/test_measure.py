"""Automatic measurements (NeuroKit2): known heart rates, the sample's device values, limits."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from services.ecg.measure import KIND, LeadNotFound, measure
from services.ecg.prioritise import Thresholds, breaches, raised
from services.ecg.waveform import decode

from .synthetic import ecg_dataset

NAMES = {"heart_rate", "rr", "pr", "qrs", "qt", "qtc_bazett", "qtc_fridericia"}


@pytest.mark.parametrize("rate", [35, 60, 75, 120, 170])
def test_heart_rate_of_synthetic_ecgs_within_3_bpm(rate):
    result = measure(decode(ecg_dataset(rate)).rhythm())
    values = result["measurements"]
    assert result["kind"] == KIND and result["lead"] == "II" and set(values) == NAMES
    assert values["heart_rate"]["available"] and abs(values["heart_rate"]["value"] - rate) <= 3
    assert abs(values["rr"]["value"] - 60000 / rate) <= 60000 / rate * 0.04
    assert values["heart_rate"]["unit"] == "bpm" and values["rr"]["unit"] == "ms"


def test_normal_synthetic_ecg_breaches_nothing_and_bradycardia_does():
    normal = measure(decode(ecg_dataset(75)).rhythm())
    v = {k: x["value"] for k, x in normal["measurements"].items()}
    assert 60 <= v["qrs"] <= 120 and 300 <= v["qt"] <= 450 and 350 <= v["qtc_bazett"] <= 470
    assert abs(v["qtc_bazett"] - v["qt"] / (v["rr"] / 1000) ** 0.5) < 0.2
    assert abs(v["qtc_fridericia"] - v["qt"] / (v["rr"] / 1000) ** (1 / 3)) < 0.2
    assert breaches(normal, Thresholds()) == []
    slow = breaches(measure(decode(ecg_dataset(35)).rhythm()), Thresholds())
    assert [b["measurement"] for b in slow] == ["heart_rate"] and "bradycardia" in slow[0]["reason"]
    fast = breaches(measure(decode(ecg_dataset(170)).rhythm()), Thresholds())
    assert [b["measurement"] for b in fast] == ["heart_rate"] and "tachycardia" in fast[0]["reason"]
    assert raised("routine") == "urgent" and raised("urgent") == "stat" and raised("stat") is None


def test_pydicom_sample_close_to_the_devices_own_measurements():
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    device = {a.ConceptNameCodeSequence[0].CodeMeaning: float(a.NumericValue)
              for a in ds.WaveformAnnotationSequence if "NumericValue" in a}
    values = {k: x["value"] for k, x in measure(decode(ds).rhythm())["measurements"].items()}
    assert abs(values["rr"] - device["RR Interval"]) <= 10  # 982 ms
    assert abs(values["qt"] - device["QT Interval"]) <= 25  # 368 ms
    assert abs(values["pr"] - device["PR Interval"]) <= 30  # 161 ms
    assert values["qrs"] <= 120  # the device says 75 ms; the library runs long (docs/ecg.md)


def test_what_the_signal_does_not_allow_is_flagged_not_guessed():
    ecg = decode(pydicom.dcmread(get_testdata_file("waveform_ecg.dcm")))
    median_beat = measure(ecg.groups[1])  # 1.2 s: one beat
    assert not any(x["available"] for x in median_beat["measurements"].values())
    assert all(x["reason"] for x in median_beat["measurements"].values())
    flat = decode(ecg_dataset(60))
    for lead in flat.rhythm().leads:
        lead.samples = np.zeros_like(lead.samples)
    result = measure(flat.rhythm())
    assert not result["measurements"]["heart_rate"]["available"]
    assert breaches(result, Thresholds()) == []  # nothing measured: nothing raised
    assert measure(ecg.rhythm(), "V5")["lead"] == "V5"
    with pytest.raises(LeadNotFound):
        measure(ecg.rhythm(), "V7")
