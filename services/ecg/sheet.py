"""The 12-lead sheet as a cardiologist reads it on paper, drawn to SVG and PNG.

I/O free.  One layout in millimetres, two renderers:

* paper speed 25 mm/s, gain 10 mm/mV, grid of 1 mm (thin) and 5 mm (thick) lines;
* rows ``I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6``: each column shows 2.5 s, the
  columns being consecutive (0-2.5 s, 2.5-5 s, ...), with a tick where a column starts;
* a 10 s lead II rhythm strip at the bottom;
* a 1 mV x 0.2 s calibration pulse at the start of every row;
* a header: patient, acquisition time, speed, gain, filters, sampling rate.

The SVG is in true millimetres (prints at scale); the PNG has ``px_per_mm`` pixels per mm
(default 5: 1375 x 850 px), drawn with Pillow directly (fast; no browser, no matplotlib).
Chinese names need a CJK font: WenQuanYi Micro Hei (Debian ``fonts-wqy-microhei``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np

from .waveform import Ecg, MultiplexGroup, display_name

SPEED_MM_S = 25.0
GAIN_MM_MV = 10.0
COLUMN_SECONDS = 2.5
RHYTHM_SECONDS = 10.0
LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"

# Paper geometry, mm
GRID_LEFT, GRID_TOP = 5.0, 25.0
TRACE_LEFT = 15.0  # after the calibration pulse
TRACE_WIDTH = SPEED_MM_S * COLUMN_SECONDS * 4  # 250 mm = 10 s
ROW_HEIGHT = 35.0
ROWS = len(LAYOUT) + 1
GRID_RIGHT = TRACE_LEFT + TRACE_WIDTH + 5.0
GRID_BOTTOM = GRID_TOP + ROWS * ROW_HEIGHT
PAPER_WIDTH_MM = GRID_RIGHT + 5.0  # 275
PAPER_HEIGHT_MM = GRID_BOTTOM + 5.0  # 170
BASELINE_IN_ROW = 21.0  # below the row top: room for R waves above, S waves below

FONT_FAMILY = "'WenQuanYi Micro Hei', 'Noto Sans CJK SC', 'Source Han Sans SC', 'Microsoft YaHei', " \
              "'PingFang SC', sans-serif"
FONT_FILES = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
              "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
MINOR, MAJOR, TRACE, INK = "#f6c8c8", "#e48a8a", "#000000", "#202020"


@dataclass
class Text:
    x: float
    y: float  # baseline, mm
    text: str
    size: float  # mm
    bold: bool = False


@dataclass
class Sheet:
    """Everything to draw, in mm (y grows downwards)."""

    traces: list[list[tuple[float, float]]] = field(default_factory=list)
    marks: list[list[tuple[float, float]]] = field(default_factory=list)  # calibration pulses, column ticks
    texts: list[Text] = field(default_factory=list)


def _timestamp(value: str) -> str:
    digits = "".join(ch for ch in value if ch.isdigit())
    if len(digits) >= 12:
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]} {digits[8:10]}:{digits[10:12]}" + (
            f":{digits[12:14]}" if len(digits) >= 14 else "")
    if len(digits) == 8:
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"
    return value


def _envelope(samples: np.ndarray, rate: float, t0: float, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Times and values of ``seconds`` from ``t0``, reduced to a min/max pair per 0.1 mm so a
    1000 Hz trace keeps every QRS peak without 10 000 points per lead."""
    start, stop = int(round(t0 * rate)), int(round((t0 + seconds) * rate))
    part = samples[start:stop]
    if part.size == 0:
        return np.empty(0), np.empty(0)
    step = max(1, int(rate * 0.1 / SPEED_MM_S))  # samples per 0.1 mm
    if step < 3:
        return t0 + np.arange(part.size) / rate, part
    n = part.size // step
    blocks = part[: n * step].reshape(n, step)
    lo, hi = np.nanargmin(np.nan_to_num(blocks, nan=np.inf), axis=1), np.nanargmax(
        np.nan_to_num(blocks, nan=-np.inf), axis=1)
    first, second = np.minimum(lo, hi), np.maximum(lo, hi)
    idx = np.empty(2 * n, dtype=int)
    idx[0::2] = np.arange(n) * step + first
    idx[1::2] = np.arange(n) * step + second
    tail = np.arange(n * step, part.size)
    idx = np.concatenate([idx, tail])
    return t0 + idx / rate, part[idx]


def _trace(samples: np.ndarray, rate: float, t0: float, seconds: float, x0: float,
           baseline: float) -> list[list[tuple[float, float]]]:
    """Polylines (split at gaps: padding samples are NaN) in mm."""
    times, values = _envelope(samples, rate, t0, seconds)
    xs = x0 + (times - t0) * SPEED_MM_S
    ys = np.clip(baseline - values * GAIN_MM_MV, GRID_TOP, GRID_BOTTOM)
    lines, current = [], []
    for x, y in zip(xs.tolist(), ys.tolist()):
        if y != y:  # NaN
            if len(current) > 1:
                lines.append(current)
            current = []
            continue
        current.append((round(x, 2), round(y, 2)))
    if len(current) > 1:
        lines.append(current)
    return lines


def layout(ecg: Ecg, group: MultiplexGroup | None = None) -> Sheet:
    group = group or ecg.rhythm()
    sheet = Sheet()
    rate = group.sampling_rate
    name = display_name(ecg.patient_name) or "(no name)"
    sex = {"M": "男 M", "F": "女 F"}.get(ecg.sex, ecg.sex or "-")
    sheet.texts.append(Text(GRID_LEFT, 9.0, name, 5.0, bold=True))
    sheet.texts.append(Text(GRID_LEFT + 70.0, 9.0, f"ID {ecg.patient_id or '-'}   {sex}   "
                                                   f"DOB {_timestamp(ecg.birth_date) or '-'}", 3.2))
    sheet.texts.append(Text(GRID_LEFT + 180.0, 9.0, _timestamp(ecg.acquired), 3.2))
    lows = {lead.filter_low_hz for lead in group.leads if lead.filter_low_hz is not None}
    highs = {lead.filter_high_hz for lead in group.leads if lead.filter_high_hz is not None}
    filters = f"   filter {min(lows):g}-{max(highs):g} Hz" if lows and highs else ""
    sheet.texts.append(Text(GRID_LEFT, 17.0, f"{SPEED_MM_S:g} mm/s   {GAIN_MM_MV:g} mm/mV{filters}   "
                                             f"{rate:g} Hz   {group.duration:.1f} s   "
                                             f"{len(group.leads)} leads", 3.2))
    sheet.texts.append(Text(GRID_LEFT + 180.0, 17.0, "grid 1 mm = 0.04 s / 0.1 mV", 3.0))
    rows = [*LAYOUT, (RHYTHM_LEAD,)]
    for r, row in enumerate(rows):
        baseline = GRID_TOP + r * ROW_HEIGHT + BASELINE_IN_ROW
        # calibration pulse: 1 mV high, 0.2 s wide
        x = GRID_LEFT + 2.0
        sheet.marks.append([(x, baseline), (x + 1.0, baseline), (x + 1.0, baseline - GAIN_MM_MV),
                            (x + 1.0 + 0.2 * SPEED_MM_S, baseline - GAIN_MM_MV),
                            (x + 1.0 + 0.2 * SPEED_MM_S, baseline), (TRACE_LEFT, baseline)])
        seconds = RHYTHM_SECONDS if len(row) == 1 else COLUMN_SECONDS
        for c, lead_name in enumerate(row):
            x0 = TRACE_LEFT + c * COLUMN_SECONDS * SPEED_MM_S
            lead = group.lead(lead_name)
            label = lead_name if lead is not None else f"{lead_name} (absent)"
            if len(row) == 1:
                label += "  rhythm 10 s"
            if lead is not None and lead.unit != "mV":
                label += f" ({lead.unit})"
            sheet.texts.append(Text(x0 + 1.0, baseline - 13.0, label, 3.6, bold=True))
            if c:
                sheet.marks.append([(x0, baseline - 4.0), (x0, baseline + 4.0)])
            if lead is not None:
                t0 = 0.0 if len(row) == 1 else c * COLUMN_SECONDS
                sheet.traces.extend(_trace(lead.samples, rate, t0, seconds, x0, baseline))
    return sheet


# --- SVG ----------------------------------------------------------------------------------

def _grid_svg() -> list[str]:
    out = []
    for kind, color, width in (("minor", MINOR, 0.1), ("major", MAJOR, 0.25)):
        step = 1 if kind == "minor" else 5
        d = []
        for i in range(0, int(GRID_RIGHT - GRID_LEFT) + 1, step):
            x = GRID_LEFT + i
            d.append(f"M{x:g} {GRID_TOP:g}V{GRID_BOTTOM:g}")
        for i in range(0, int(GRID_BOTTOM - GRID_TOP) + 1, step):
            y = GRID_TOP + i
            d.append(f"M{GRID_LEFT:g} {y:g}H{GRID_RIGHT:g}")
        out.append(f'<path class="grid-{kind}" d="{"".join(d)}" stroke="{color}" stroke-width="{width}" fill="none"/>')
    return out


def _points(line: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in line)


def to_svg(sheet: Sheet) -> str:
    w, h = PAPER_WIDTH_MM, PAPER_HEIGHT_MM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:g}mm" height="{h:g}mm" viewBox="0 0 {w:g} {h:g}">',
             f'<rect width="{w:g}" height="{h:g}" fill="#ffffff"/>', *_grid_svg(),
             f'<g fill="none" stroke="{TRACE}" stroke-width="0.3" stroke-linejoin="round">']
    parts += [f'<polyline class="mark" points="{_points(m)}"/>' for m in sheet.marks]
    parts += [f'<polyline class="trace" points="{_points(t)}"/>' for t in sheet.traces]
    parts.append(f'</g><g font-family="{FONT_FAMILY}" fill="{INK}">')
    for t in sheet.texts:
        weight = ' font-weight="bold"' if t.bold else ""
        parts.append(f'<text x="{t.x:g}" y="{t.y:g}" font-size="{t.size:g}"{weight}>{escape(t.text)}</text>')
    parts.append("</g></svg>")
    return "\n".join(parts)


# --- PNG ----------------------------------------------------------------------------------

def _font(size_px: int):
    from PIL import ImageFont

    for path in FONT_FILES:
        if Path(path).exists():
            return ImageFont.truetype(path, size_px)
    return ImageFont.load_default(size=size_px)  # no CJK glyphs: install fonts-wqy-microhei


def png_size(px_per_mm: float) -> tuple[int, int]:
    return round(PAPER_WIDTH_MM * px_per_mm), round(PAPER_HEIGHT_MM * px_per_mm)


def to_png(sheet: Sheet, px_per_mm: float = 5.0) -> bytes:
    from PIL import Image, ImageDraw

    k = px_per_mm
    image = Image.new("RGB", png_size(k), "white")
    draw = ImageDraw.Draw(image)
    for step, color, width in ((1, MINOR, 1), (5, MAJOR, max(1, round(k / 4)))):
        if step == 1 and k < 3:
            continue  # 1 mm lines closer than 3 px would grey the paper
        for i in range(0, int(GRID_RIGHT - GRID_LEFT) + 1, step):
            x = round((GRID_LEFT + i) * k)
            draw.line([(x, round(GRID_TOP * k)), (x, round(GRID_BOTTOM * k))], fill=color, width=width)
        for i in range(0, int(GRID_BOTTOM - GRID_TOP) + 1, step):
            y = round((GRID_TOP + i) * k)
            draw.line([(round(GRID_LEFT * k), y), (round(GRID_RIGHT * k), y)], fill=color, width=width)
    width = max(1, round(k * 0.3))
    for line in [*sheet.marks, *sheet.traces]:
        draw.line([(x * k, y * k) for x, y in line], fill=TRACE, width=width, joint="curve")
    for t in sheet.texts:
        font = _font(max(8, round(t.size * k)))
        draw.text((t.x * k, t.y * k), t.text, fill=INK, font=font, anchor="ls",
                  stroke_width=1 if t.bold else 0, stroke_fill=INK)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=3)
    return out.getvalue()
