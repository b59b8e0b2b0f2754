"""Rendered images (PS3.18 8.3.5.1, 9.5): one frame as PNG or JPEG, windowed, fitted to a viewport.

Free of I/O: the caller reads the header and decodes the one frame (never the whole
Pixel Data of a long multi-frame instance).  Decoding is pydicom's (Pillow handles JPEG and
JPEG 2000 pixel data); the Modality LUT (rescale slope/intercept) comes first, then the
VOI window — the request's ``window=center,width[,linear|linear-exact|sigmoid]``, else the
instance's first Window Center/Width, else the frame's own range.  MONOCHROME1 is inverted
so that bone is white on every screen.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

MEDIA_TYPES = ("image/jpeg", "image/png")
FUNCTIONS = ("linear", "linear-exact", "sigmoid")
MAX_VIEWPORT = 8192


class RenderError(ValueError):
    """A rendering parameter or an instance that cannot be rendered (400 / 406 by the caller)."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"


def parse_window(text: str | None) -> Window | None:
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise RenderError("window must be center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise RenderError(f"window center and width must be numbers, got {text!r}") from None
    function = parts[2].lower() if len(parts) == 3 else "linear"
    if function not in FUNCTIONS:
        raise RenderError(f"window function must be one of {', '.join(FUNCTIONS)}")
    if width <= 0 or (width < 1 and function == "linear"):
        raise RenderError("window width must be positive (at least 1 for linear)")
    return Window(center, width, function)


def parse_viewport(text: str | None) -> tuple[int, int] | None:
    """``viewport=vw,vh`` (the source-region form ``vw,vh,sx,sy,sw,sh`` is not supported)."""
    if not text:
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise RenderError("viewport must be width,height")
    try:
        width, height = int(parts[0]), int(parts[1])
    except ValueError:
        raise RenderError(f"viewport width and height must be integers, got {text!r}") from None
    if not (0 < width <= MAX_VIEWPORT and 0 < height <= MAX_VIEWPORT):
        raise RenderError(f"viewport sides must be 1..{MAX_VIEWPORT}")
    return width, height


def _voi(values: np.ndarray, window: Window) -> np.ndarray:
    c, w = window.center, window.width
    if window.function == "sigmoid":
        return 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if window.function == "linear-exact":
        return np.clip((values - (c - w / 2)) / w * 255.0, 0, 255)
    # PS3.3 C.11.2.1.2.1 linear
    return np.clip(((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0, 255)


def _first(value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(value[0] if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
                     else value)
    except (TypeError, ValueError, IndexError):
        return None


def frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def check_frame(ds: Dataset, frame: int) -> None:
    """``ds`` is the header (read up to Pixel Data); ``frame`` is 1-based."""
    if ds.get("Rows") is None or ds.get("Columns") is None:
        raise RenderError("instance has no pixel data")
    if not 1 <= frame <= frame_count(ds):
        raise RenderError(f"frame {frame} out of range 1..{frame_count(ds)}")


def render(ds: Dataset, arr: np.ndarray, *, media_type: str = "image/jpeg", window: Window | None = None,
           viewport: tuple[int, int] | None = None, quality: int = 90) -> bytes:
    """One decoded frame ``arr`` of the instance whose header is ``ds``, as ``media_type`` bytes."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 3:
        image = Image.fromarray(_to_8bit_color(arr), "RGB")
    else:
        values = apply_modality_lut(arr, ds).astype(np.float64)
        if window is None:
            center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
            if center is not None and width is not None and width >= 1:
                window = Window(center, width)
            else:
                low, high = float(values.min()), float(values.max())
                window = Window((low + high) / 2, max(high - low, 1.0), "linear-exact")
        gray = _voi(values, window)
        if photometric == "MONOCHROME1":
            gray = 255.0 - gray
        image = Image.fromarray(gray.astype(np.uint8), "L")
    if viewport is not None:  # fit inside the viewport, aspect ratio kept
        scale = min(viewport[0] / image.width, viewport[1] / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, "PNG")
    else:
        image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _to_8bit_color(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    high = float(arr.max()) or 1.0
    return (arr.astype(np.float64) / high * 255.0).clip(0, 255).astype(np.uint8)
