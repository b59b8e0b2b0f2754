"""The PDF's CJK font, fast: a cached subset for the common case, the whole font otherwise.

Loading the whole WenQuanYi Micro Hei collection (~50,000 glyphs) costs about 0.3 s of CPU per
PDF.  A subset with ASCII, the GB2312 hanzi and CJK punctuation (~7,800 glyphs) loads in a
third of that and covers nearly every report; text with any other character (a rare
character in a name) is rendered with the whole font.  The subset is built once in the
background and kept under the data directory; until it exists the whole font is used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("yilian.delivery")


@lru_cache(maxsize=1)
def common_characters() -> frozenset[int]:
    chars = set(range(0x20, 0x7F)) | set(range(0x2000, 0x2070)) | set(range(0x3000, 0x3040)) \
        | set(range(0xFF00, 0xFFF0)) | {0xB7, 0xD7, 0xF7}
    for hi in range(0xA1, 0xF8):  # every GB2312 code point
        for lo in range(0xA1, 0xFF):
            try:
                chars.add(ord(bytes([hi, lo]).decode("gb2312")))
            except UnicodeDecodeError:
                pass
    return frozenset(chars)


class Fonts:
    def __init__(self, full: str, cache_dir: Path) -> None:
        self.full = full
        stat = os.stat(full)
        key = hashlib.sha256(f"{full}|{stat.st_size}|{stat.st_mtime_ns}|v2".encode()).hexdigest()[:16]
        self.subset_path = cache_dir / f"cjk-common-{key}.ttf"
        self._building: threading.Thread | None = None

    def prepare(self) -> None:
        """Start building the subset if it is not cached yet (returns at once)."""
        if self.subset_path.exists() or self._building is not None:
            return
        self._building = threading.Thread(target=self._build, name="delivery:font-subset", daemon=True)
        self._building.start()

    def _build(self) -> None:
        from fontTools import subset
        from fontTools.ttLib import TTFont
        try:
            font = TTFont(self.full, fontNumber=0)
            options = subset.Options()
            options.notdef_outline, options.glyph_names, options.hinting = True, True, False  # names: faster to load
            options.name_IDs, options.layout_features = ["*"], []
            subsetter = subset.Subsetter(options)
            subsetter.populate(unicodes=common_characters())
            subsetter.subset(font)
            self.subset_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.subset_path.with_suffix(f".{os.getpid()}.tmp")
            font.save(str(tmp))
            os.replace(tmp, self.subset_path)  # atomic: another process may be building it too
            log.info("PDF font subset cached", extra={"path": str(self.subset_path)})
        except Exception:  # noqa: BLE001 - the whole font still works, only slower
            log.exception("could not build the PDF font subset; using the whole font")

    def for_text(self, *texts: str) -> str:
        """The font file to render ``texts`` with."""
        if self.subset_path.exists():
            common = common_characters()
            if all(ord(ch) in common for text in texts for ch in text if ch not in "\n\r\t"):
                return str(self.subset_path)
        return self.full
