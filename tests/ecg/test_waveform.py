"""Decoding the DICOM Waveform Sequence (PS3.3 C.10.9): lead names, units, scaling, errors."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from services.ecg.load import parse
from services.ecg.waveform import STANDARD_LEADS, WaveformError, decimate, decode

from .synthetic import ecg_dataset, leads_mv, write


@pytest.fixture(scope="module")
def sample():
    return pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))


def test_pydicom_sample_has_twelve_named_leads_in_mv(sample):
    ecg = decode(sample)
    assert [(g.label, g.originality, g.sampling_rate, g.sample_count) for g in ecg.groups] == [
        ("RHYTHM", "ORIGINAL", 1000.0, 10000), ("MEDIAN BEAT", "DERIVED", 1000.0, 1200)]
    rhythm = ecg.rhythm()
    assert rhythm.label == "RHYTHM" and rhythm.duration == 10.0
    assert tuple(lead.name for lead in rhythm.leads) == STANDARD_LEADS  # "Lead I (Einthoven)" -> I, SCPECG codes
    assert {lead.unit for lead in rhythm.leads} == {"mV"}
    assert rhythm.lead("I").source == "SCPECG:5.6.3-9-1"
    # raw x 1.25 uV, the same numbers pydicom's own decoder gives (in uV)
    for c, lead in enumerate(rhythm.leads):
        np.testing.assert_allclose(lead.samples, sample.waveform_array(0)[:, c] / 1000.0)
    assert 0.5 < np.nanmax(rhythm.lead("II").samples) < 3.0  # an R wave of ~1 mV, not 1000


def test_synthetic_round_trip_is_within_one_quantum(tmp_path):
    path = write(ecg_dataset(75, sensitivity_uv=2.5), tmp_path, "n")
    ecg = parse(path.read_bytes())
    group = ecg.rhythm()
    assert group.sampling_rate == 500 and group.sample_count == 5000
    truth = leads_mv(75)
    for name in STANDARD_LEADS:
        assert np.max(np.abs(group.lead(name).samples - truth[name])) <= 0.00125 + 1e-9  # half of 2.5 uV
    assert ecg.patient_name == "王^五"


def test_correction_factor_baseline_units_and_padding():
    ds = ecg_dataset(60)
    group = ds.WaveformSequence[0]
    raw = np.frombuffer(group.WaveformData, dtype="<i2").reshape(-1, 12).copy()
    raw[10:20, 1] = -32768  # padding: the modality had no value there
    group.WaveformData = raw.tobytes()
    group.WaveformPaddingValue = np.int16(-32768).tobytes()
    channel = group.ChannelDefinitionSequence[1]
    channel.ChannelSensitivity = "0.0025"
    channel.ChannelSensitivityUnitsSequence[0].CodeValue = "mV"
    channel.ChannelSensitivityCorrectionFactor = "2"
    channel.ChannelBaseline = "0.5"
    lead = decode(ds).rhythm().lead("II")
    assert np.isnan(lead.samples[10:20]).all() and not np.isnan(lead.samples[20:]).any()
    np.testing.assert_allclose(lead.samples[20:], raw[20:, 1] * 0.0025 * 2 + 0.5)
    assert lead.unit == "mV"


def test_bad_waveforms_say_what_is_wrong():
    with pytest.raises(WaveformError, match="no Waveform Sequence"):
        decode(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    ds = ecg_dataset(60)
    ds.WaveformSequence[0].WaveformData = ds.WaveformSequence[0].WaveformData[:1000]
    with pytest.raises(WaveformError, match="holds 500 samples"):
        decode(ds)
    ds = ecg_dataset(60)
    ds.WaveformSequence[0].WaveformSampleInterpretation = "MB"
    with pytest.raises(WaveformError, match="'MB' with 16 bits is not supported"):
        decode(ds)
    with pytest.raises(WaveformError, match="not a waveform|cannot be parsed"):
        parse(b"\x00" * 10)


def test_decimation_filters_and_keeps_duration():
    samples = leads_mv(60)["II"]
    out, rate = decimate(samples, 500, 100)
    assert rate == 100 and len(out) == 1000
    assert decimate(samples, 500, 1000)[1] == 500  # never up-sampled
    # the R waves survive the low-pass filter (~1.2 mV peaks, some attenuation)
    assert np.max(out) > 0.5


def test_a_stored_file_failing_the_store_checks_is_a_waveform_error(tmp_path):
    """Stored before the gateway refused such files: never inflated whole, never decoded 300 deep."""
    from tests.dicom_samples import hostile_instance
    _, nested = hostile_instance("nested_300", tmp_path)
    with pytest.raises(WaveformError, match="nested deeper than 64"):
        parse(nested.read_bytes(), "1.2.840.10008.1.2.1")
    _, bomb = hostile_instance("deflate_bomb_64", tmp_path)
    with pytest.raises(WaveformError, match="inflates past"):
        parse(bomb.read_bytes(), "1.2.840.10008.1.2.1.99")
