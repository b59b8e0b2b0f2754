"""Benchmark corpora: generated DICOM instances, cached under ``bench/out/corpus``.

* ``small``: many small CT-like instances (128x128, 16 bit): per-message cost dominates.
* ``mixed``: 512x512 CT slices, a few 3000x2500 DX images and 12-lead ECGs: bytes matter.
* ``clinics``: 8 folders of 100 small instances, one per clinic AE title (concurrency).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian,
                         PYDICOM_IMPLEMENTATION_UID, generate_uid)

OUT = Path(__file__).resolve().parent / "out" / "corpus"


def _image(path: Path, *, sop_class: str, modality: str, study: str, series: str, number: int,
           rows: int, cols: int, patient: tuple[str, str], rng: np.random.Generator) -> None:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality = modality
    ds.PatientID, ds.PatientName = patient
    ds.StudyDate, ds.StudyTime = "20261123", "101500"
    ds.AccessionNumber = f"ACC{number:06d}"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def _ecg(path: Path, study: str, series: str, number: int) -> None:
    ds = dcmread(get_testdata_file("waveform_ecg.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = number
    ds.save_as(path, enforce_file_format=True)


def build(name: str, *, quick: bool = False) -> Path:
    """Build (once) and return the directory of corpus ``name``."""
    suffix = "-quick" if quick else ""
    root = OUT / f"{name}{suffix}"
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(20261123)
    if name == "small":
        studies, per_study = (2, 50) if quick else (10, 100)
        for s in range(studies):
            study, series = generate_uid(), generate_uid()
            d = root / f"study{s:02d}"
            d.mkdir()
            for i in range(per_study):
                _image(d / f"{i:04d}.dcm", sop_class=CTImageStorage, modality="CT", study=study, series=series,
                       number=i + 1, rows=128, cols=128, patient=(f"P{s:04d}", f"ZHANG^SAN{s}"), rng=rng)
    elif name == "mixed":
        ct, dx, ecg = (20, 1, 2) if quick else (100, 4, 20)
        study = generate_uid()
        ct_series, dx_series, ecg_series = generate_uid(), generate_uid(), generate_uid()
        for i in range(ct):
            _image(root / f"ct{i:04d}.dcm", sop_class=CTImageStorage, modality="CT", study=study,
                   series=ct_series, number=i + 1, rows=512, cols=512, patient=("M0001", "LI^SI"), rng=rng)
        for i in range(dx):
            _image(root / f"dx{i:02d}.dcm", sop_class=DigitalXRayImageStorageForPresentation, modality="DX",
                   study=study, series=dx_series, number=i + 1, rows=3000, cols=2500,
                   patient=("M0001", "LI^SI"), rng=rng)
        for i in range(ecg):
            _ecg(root / f"ecg{i:02d}.dcm", study, ecg_series, i + 1)
    elif name == "clinics":
        per = 20 if quick else 100
        for c in range(8):
            study, series = generate_uid(), generate_uid()
            d = root / f"clinic{c}"
            d.mkdir()
            for i in range(per):
                _image(d / f"{i:04d}.dcm", sop_class=CTImageStorage, modality="CT", study=study, series=series,
                       number=i + 1, rows=128, cols=128, patient=(f"C{c}", f"WANG^WU{c}"), rng=rng)
    else:
        raise ValueError(name)
    done.touch()
    return root


def size_and_count(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*.dcm")]
    return len(files), sum(p.stat().st_size for p in files)
