"""The 12-lead sheet: standard layout, true paper scale in SVG and in PNG pixels, fast, readable."""

from __future__ import annotations

import io
import time
import xml.etree.ElementTree as ET

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

from services.ecg import sheet
from services.ecg.waveform import decode

from .synthetic import ecg_dataset

SVG = "{http://www.w3.org/2000/svg}"


def test_svg_is_valid_at_true_millimetres_with_every_lead_label():
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    ds.PatientName = "王^五"
    text = sheet.to_svg(sheet.layout(decode(ds)))
    root = ET.fromstring(text)
    assert root.get("width") == "275mm" and root.get("height") == "170mm" and root.get("viewBox") == "0 0 275 170"
    labels = [t.text for t in root.iter(SVG + "text")]
    for lead in ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"):
        assert lead in labels
    assert "II  rhythm 10 s" in labels and "王五" in labels
    assert any("25 mm/s" in t and "10 mm/mV" in t and "1000 Hz" in t for t in labels)
    fonts = {g.get("font-family") for g in root.iter(SVG + "g") if g.get("font-family")}
    assert any("WenQuanYi Micro Hei" in f for f in fonts)
    # 12 column traces + the rhythm strip; 4 calibration pulses + 9 column ticks
    assert len([p for p in root.iter(SVG + "polyline") if p.get("class") == "trace"]) == 13
    assert len([p for p in root.iter(SVG + "polyline") if p.get("class") == "mark"]) == 4 + 9
    # grid: 1 mm and 5 mm lines
    assert {p.get("class") for p in root.iter(SVG + "path")} == {"grid-minor", "grid-major"}


def _dark(pixel) -> bool:
    return sum(pixel) < 200


def test_png_scale_is_25_mm_per_second_and_10_mm_per_mv():
    k = 10  # px per mm
    ecg = decode(ecg_dataset(60))
    lead_ii = ecg.rhythm().lead("II")  # 1 mV pulses of 20 ms, one per second: 25 mm apart, 10 mm high
    lead_ii.samples = np.zeros_like(lead_ii.samples)
    for start in range(250, 5000, 500):
        lead_ii.samples[start:start + 10] = 1.0
    image = Image.open(io.BytesIO(sheet.to_png(sheet.layout(ecg), k))).convert("RGB")
    assert image.size == (275 * k, 170 * k)
    px = np.asarray(image).astype(int).sum(axis=2)
    # calibration pulse of the first row: its top is 10 mm (1 mV) above the baseline
    baseline = sheet.GRID_TOP + sheet.BASELINE_IN_ROW
    x_top = round((sheet.GRID_LEFT + 2 + 1 + 2.5) * k)
    assert px[round((baseline - 10) * k), x_top] < 200 and px[round((baseline - 5) * k), x_top] > 200
    # rhythm strip: only the pulses cross the line 0.8 mV above the baseline
    strip_baseline = baseline + 3 * sheet.ROW_HEIGHT
    line = px[round((strip_baseline - 8) * k), round(sheet.TRACE_LEFT * k):round((sheet.TRACE_LEFT + 250) * k)]
    crossing = np.flatnonzero(line < 200)
    clusters = [crossing[0]] + [b for a, b in zip(crossing, crossing[1:]) if b - a > 5 * k]
    spacing = np.diff(clusters)
    assert len(clusters) == 10 and np.all(np.abs(spacing - 25 * k) <= 1), spacing
    assert abs(clusters[0] - 0.5 * 25 * k) <= 1  # the first at 0.5 s = 12.5 mm
    column = px[:, round(sheet.TRACE_LEFT * k) + clusters[-1] + 2]  # the first is under the label
    rows = np.flatnonzero(column[round((strip_baseline - 15) * k):round((strip_baseline + 1) * k)] < 200)
    assert abs(rows.min() - 5 * k) <= 2  # the pulse top: 10 mm above the baseline, 15 mm below the window top


def test_png_of_a_12_lead_10_s_500_hz_ecg_in_under_a_second():
    ecg = decode(ecg_dataset(75))
    started = time.perf_counter()
    data = sheet.to_png(sheet.layout(ecg))
    elapsed = time.perf_counter() - started
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(data)).size == (1375, 850)
    assert elapsed < 1.0, elapsed


def test_missing_leads_are_marked_absent():
    ecg = decode(ecg_dataset(75, leads=("I", "II", "III")))
    root = ET.fromstring(sheet.to_svg(sheet.layout(ecg)))
    labels = [t.text for t in root.iter(SVG + "text")]
    assert "V1 (absent)" in labels and "aVR (absent)" in labels and "II" in labels


def test_pydicom_sample_renders_to_png_at_the_paper_size():
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    data = sheet.to_png(sheet.layout(decode(ds)), 8)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (275 * 8, 170 * 8)
    assert np.asarray(image.convert("L")).min() == 0  # black ink on it
