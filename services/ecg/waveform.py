"""Decode the DICOM Waveform Sequence (PS3.3 C.10.9) into leads in physical units.

I/O free: takes a pydicom ``Dataset`` and returns numbers.  Each item of the Waveform
Sequence (5400,0100) is a *multiplex group*: channels sampled together at one Sampling
Frequency, interleaved sample by sample in Waveform Data (5400,1010).  Per channel
(Channel Definition Sequence, 003A,0200):

    value = raw * Channel Sensitivity * Channel Sensitivity Correction Factor + Channel Baseline

in the unit of the Channel Sensitivity Units Sequence (UCUM: ``uV``, ``mV``, ...), which we
convert to millivolts.  The lead name comes from the Channel Source Sequence code (SCPECG
``5.6.3-9-n`` or MDC ``2:n``), else from its meaning.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ECG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.4": "General 32-bit ECG Waveform Storage",
}
STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# SCPECG (5.6.3-9-n) and MDC (2:n) share the lead numbering of ISO/IEEE 11073-10101.
_LEAD_NUMBERS = {1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
                 61: "III", 62: "aVR", 63: "aVL", 64: "aVF"}
_CODE = re.compile(r"^(?:5\.6\.3-9-|2:)(\d+)$")
_MEANING = re.compile(r"\b(?:lead\s+)?(aVR|aVL|aVF|V[1-6]|III|II|I)\b", re.IGNORECASE)

# UCUM voltage units -> factor to millivolts
_TO_MV = {"uV": 1e-3, "µV": 1e-3, "mV": 1.0, "V": 1e3, "nV": 1e-6}

# Waveform Sample Interpretation (5400,1006) -> numpy dtype (little endian, as PS3.5 requires
# for the transfer syntaxes we store)
_DTYPES = {("SB", 8): "i1", ("UB", 8): "u1", ("SS", 16): "<i2", ("US", 16): "<u2",
           ("SL", 32): "<i4", ("UL", 32): "<u4"}


class WaveformError(ValueError):
    """The data set holds no decodable waveform (the message says what is wrong)."""


@dataclass
class Lead:
    name: str  # I, II, ..., V6; or the channel's code meaning for non-standard sources
    unit: str  # "mV" after conversion, else the original UCUM code (or "arbitrary")
    samples: np.ndarray  # float64, NaN where the modality wrote the padding value
    source: str = ""  # the Channel Source code (scheme:value) as found
    filter_low_hz: float | None = None
    filter_high_hz: float | None = None


@dataclass
class MultiplexGroup:
    index: int
    label: str
    originality: str
    sampling_rate: float
    leads: list[Lead] = field(default_factory=list)

    @property
    def sample_count(self) -> int:
        return len(self.leads[0].samples) if self.leads else 0

    @property
    def duration(self) -> float:
        return self.sample_count / self.sampling_rate if self.sampling_rate else 0.0

    def lead(self, name: str) -> Lead | None:
        return next((lead for lead in self.leads if lead.name == name), None)


@dataclass
class Ecg:
    sop_class_uid: str
    groups: list[MultiplexGroup]
    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    sex: str = ""
    acquired: str = ""  # Acquisition DateTime, or Study Date + Time

    def rhythm(self) -> MultiplexGroup:
        """The group a sheet and the measurements use: the longest original recording."""
        return max(self.groups, key=lambda g: (g.originality == "ORIGINAL", g.duration, len(g.leads), -g.index))


def lead_name(channel: Any, index: int) -> tuple[str, str]:
    """(lead name, source code) of one Channel Definition Sequence item."""
    source = (channel.get("ChannelSourceSequence") or [None])[0]
    if source is None:
        return f"channel {index + 1}", ""
    value = str(source.get("CodeValue") or "")
    scheme = str(source.get("CodingSchemeDesignator") or "")
    code = f"{scheme}:{value}" if scheme else value
    match = _CODE.match(value)
    if match and int(match.group(1)) in _LEAD_NUMBERS:
        return _LEAD_NUMBERS[int(match.group(1))], code
    meaning = str(source.get("CodeMeaning") or "")
    found = _MEANING.search(meaning)
    if found:
        text = found.group(1)
        canonical = next(n for n in STANDARD_LEADS if n.lower() == text.lower())
        return canonical, code
    return meaning or value or f"channel {index + 1}", code


def _number(item: Any, keyword: str, default: float | None) -> float | None:
    value = item.get(keyword)
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise WaveformError(f"{keyword} {value!r} is not a number") from None
    return out if math.isfinite(out) else default


def decode_group(item: Any, index: int) -> MultiplexGroup:
    channels = int(item.get("NumberOfWaveformChannels") or 0)
    count = int(item.get("NumberOfWaveformSamples") or 0)
    rate = _number(item, "SamplingFrequency", None)
    bits = int(item.get("WaveformBitsAllocated") or 0)
    interpretation = str(item.get("WaveformSampleInterpretation") or "")
    definitions = list(item.get("ChannelDefinitionSequence") or [])
    where = f"multiplex group {index + 1}"
    if not rate or rate <= 0:
        raise WaveformError(f"{where}: Sampling Frequency (003A,001A) missing or not positive")
    if channels <= 0 or count <= 0:
        raise WaveformError(f"{where}: no channels or no samples")
    if len(definitions) != channels:
        raise WaveformError(f"{where}: {channels} channels announced, {len(definitions)} defined")
    dtype = _DTYPES.get((interpretation, bits))
    if dtype is None:
        raise WaveformError(f"{where}: Waveform Sample Interpretation {interpretation!r} with {bits} bits "
                            "is not supported (SB/UB 8, SS/US 16, SL/UL 32)")
    data = item.get("WaveformData")
    if data is None:
        raise WaveformError(f"{where}: no Waveform Data (5400,1010)")
    raw = np.frombuffer(bytes(data), dtype=dtype)
    if raw.size < channels * count:
        raise WaveformError(f"{where}: Waveform Data holds {raw.size} samples, "
                            f"{channels} channels x {count} samples announced")
    raw = raw[: channels * count].reshape(count, channels)
    padding = item.get("WaveformPaddingValue")
    pad = None
    if padding is not None:
        # OB/OW: the padding sample's bytes; a number if a reader already decoded it
        pad = int(np.frombuffer(padding, dtype=dtype)[0]) if isinstance(padding, bytes) else int(padding)
    group = MultiplexGroup(index, str(item.get("MultiplexGroupLabel") or ""),
                           str(item.get("WaveformOriginality") or ""), float(rate))
    for c, channel in enumerate(definitions):
        name, source = lead_name(channel, c)
        values = raw[:, c].astype(np.float64)
        missing = raw[:, c] == pad if pad is not None else None
        sensitivity = _number(channel, "ChannelSensitivity", None)
        unit = "arbitrary"
        if sensitivity is not None:
            correction = _number(channel, "ChannelSensitivityCorrectionFactor", 1.0) or 1.0
            baseline = _number(channel, "ChannelBaseline", 0.0) or 0.0
            values = values * sensitivity * correction + baseline
            units = (channel.get("ChannelSensitivityUnitsSequence") or [None])[0]
            unit = str(units.get("CodeValue") or "") if units is not None else ""
            if unit in _TO_MV:
                values = values * _TO_MV[unit]
                unit = "mV"
        if missing is not None and missing.any():
            values[missing] = np.nan
        group.leads.append(Lead(name, unit, values, source, _number(channel, "FilterLowFrequency", None),
                                _number(channel, "FilterHighFrequency", None)))
    return group


def decode(ds: Any) -> Ecg:
    """Every multiplex group of ``ds``; raise :class:`WaveformError` if there is none."""
    sequence = ds.get("WaveformSequence")
    if not sequence:
        raise WaveformError("the instance has no Waveform Sequence (5400,0100): not a waveform")
    groups = [decode_group(item, i) for i, item in enumerate(sequence)]
    acquired = str(ds.get("AcquisitionDateTime") or "") or (
        f"{ds.get('StudyDate') or ''}{ds.get('StudyTime') or ''}".strip())
    name = ds.get("PatientName")
    return Ecg(str(ds.get("SOPClassUID") or ""), groups, patient_name=str(name) if name is not None else "",
               patient_id=str(ds.get("PatientID") or ""), birth_date=str(ds.get("PatientBirthDate") or ""),
               sex=str(ds.get("PatientSex") or ""), acquired=acquired)


def decimate(samples: np.ndarray, rate: float, max_rate: float) -> tuple[np.ndarray, float]:
    """Reduce to at most ``max_rate`` samples/s by an integer factor, low-pass filtered first
    (no aliasing).  Returns (samples, new rate)."""
    factor = math.ceil(rate / max_rate) if max_rate > 0 else 1
    if factor <= 1:
        return samples, rate
    from scipy.signal import resample_poly

    filled = np.nan_to_num(samples)
    return resample_poly(filled, 1, factor), rate / factor


def display_name(name: str) -> str:
    """DICOM PN ``Family^Given`` as people write it (CJK names without a space)."""
    parts = [p for p in name.split("=")[0].split("^")[:2] if p]
    if not parts:
        ideographic = name.split("=")[1:2]
        parts = [p for p in (ideographic[0].split("^")[:2] if ideographic else []) if p]
    if any("\u3400" <= ch <= "\u9fff" for ch in "".join(parts)):
        return "".join(parts)
    return " ".join(parts)
