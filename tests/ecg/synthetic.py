"""12-lead ECG waveform data sets built from NeuroKit2's simulator, with a known heart rate.

Lead II is ``nk.ecg_simulate`` (ECGSYN, with a narrow QRS like a healthy adult's); the limb
leads follow Einthoven and Goldberger from I and II; the chest leads are scaled copies.
Written as DICOM 12-lead ECG Waveform Storage: int16 samples, sensitivity in uV.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

TWELVE_LEAD = "1.2.840.10008.5.1.4.1.1.9.1.1"
MDC = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8, "III": 61, "aVR": 62,
       "aVL": 63, "aVF": 64}
ORDER = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CHEST = {"V1": -0.5, "V2": -0.2, "V3": 0.6, "V4": 1.3, "V5": 1.2, "V6": 0.9}


@lru_cache(maxsize=16)
def lead_ii(heart_rate: float, duration: float = 10.0, rate: int = 500, seed: int = 7) -> np.ndarray:
    import neurokit2 as nk

    # ECGSYN's default QRS is ~150 ms wide; narrower waves look like a healthy adult's, but the
    # simulator only keeps them apart up to about 130 bpm
    shape = dict(ti=(-70, -10, 0, 10, 100), bi=(0.25, 0.06, 0.06, 0.06, 0.4)) if heart_rate <= 130 else {}
    return np.asarray(nk.ecg_simulate(duration=duration, sampling_rate=rate, heart_rate=heart_rate,
                                      random_state=seed, **shape), dtype=float)


def leads_mv(heart_rate: float, duration: float = 10.0, rate: int = 500) -> dict[str, np.ndarray]:
    ii = lead_ii(heart_rate, duration, rate)
    i = 0.6 * ii
    out = {"I": i, "II": ii, "III": ii - i, "aVR": -(i + ii) / 2, "aVL": i - ii / 2, "aVF": ii - i / 2}
    out.update({name: k * ii for name, k in CHEST.items()})
    return out


def ecg_dataset(heart_rate: float, *, duration: float = 10.0, rate: int = 500, sensitivity_uv: float = 2.5,
                patient_name: str = "王^五", patient_id: str = "ECG001", study_uid: str | None = None,
                leads: tuple[str, ...] = ORDER) -> Dataset:
    mv = leads_mv(heart_rate, duration, rate)
    raw = np.stack([np.round(mv[name] * 1000.0 / sensitivity_uv) for name in leads], axis=1).astype("<i2")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = TWELVE_LEAD
    ds.SOPClassUID = TWELVE_LEAD
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "ECG"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.StudyDate, ds.StudyTime = "20261123", "101500"
    ds.AcquisitionDateTime = "20261123101500"
    ds.AccessionNumber, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "ECG1", "1", 1, 1
    ds.Manufacturer = "Yilian synthetic"
    group = Dataset()
    group.MultiplexGroupLabel = "RHYTHM"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(leads)
    group.NumberOfWaveformSamples = raw.shape[0]
    group.SamplingFrequency = rate
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    channels = []
    for name in leads:
        ch = Dataset()
        source = Dataset()
        source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning = f"2:{MDC[name]}", "MDC", f"Lead {name}"
        ch.ChannelSourceSequence = Sequence([source])
        ch.ChannelSensitivity = f"{sensitivity_uv:g}"
        units = Dataset()
        units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = "uV", "UCUM", "microvolt"
        ch.ChannelSensitivityUnitsSequence = Sequence([units])
        ch.ChannelSensitivityCorrectionFactor = "1"
        ch.ChannelBaseline = "0"
        ch.WaveformBitsStored = 16
        ch.FilterLowFrequency, ch.FilterHighFrequency = "0.05", "150"
        channels.append(ch)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformData = raw.tobytes()
    ds.WaveformSequence = Sequence([group])
    return ds


def write(ds: Dataset, directory: Path, name: str) -> Path:
    path = directory / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
