"""The PDF's CJK font, fast: a cached subset for the common case, the whole font otherwise.

Loading the whole WenQuanYi Micro Hei collection (~50,000 glyphs) costs about 0.3 s of CPU per
PDF.  A subset with ASCII, the GB2312 hanzi and CJK punctuation (~7,800 glyphs) loads in a
third of that and covers nearly every report; text with any other character (a rare
character in a name) is rendered with the whole font.  The subset is built once and kept under
the data directory; until it exists the whole font is used.  Building it costs about 2 s of
CPU, so it runs in a process of its own at low priority: in a thread it would hold this
process's GIL, and in ``yilian up`` that is the gateway's too.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from functools import lru_cache
from multiprocessing.process import BaseProcess
from pathlib import Path

from ..core import orphans

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
        self._building: BaseProcess | None = None

    def prepare(self) -> None:
        """Start building the subset if it is not cached yet (returns at once)."""
        if self.subset_path.exists() or self._building is not None:
            return
        self._building = multiprocessing.get_context("spawn").Process(
            target=build_subset, args=(self.full, str(self.subset_path), os.getpid()),
            name="delivery:font-subset", daemon=True)
        with orphans.spared_from_interrupt():
            self._building.start()

    def for_text(self, *texts: str) -> str:
        """The font file to render ``texts`` with."""
        if self.subset_path.exists():
            common = common_characters()
            if all(ord(ch) in common for text in texts for ch in text if ch not in "\n\r\t"):
                return str(self.subset_path)
        return self.full


def build_subset(full: str, path: str, parent_pid: int) -> None:
    """Write the common-characters subset of ``full`` to ``path`` (in a process of its own)."""
    orphans.exit_with_parent(parent_pid)
    os.nice(10)  # after ingest and queries: nothing waits for the subset
    from fontTools import subset
    from fontTools.ttLib import TTFont
    logging.getLogger("fontTools").setLevel(logging.ERROR)  # "FFTM NOT subset ..." on the terminal is noise
    target = Path(path)
    try:
        font = TTFont(full, fontNumber=0)
        options = subset.Options()
        options.notdef_outline, options.glyph_names, options.hinting = True, True, False  # names: faster to load
        options.name_IDs, options.layout_features = ["*"], []
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=common_characters())
        subsetter.subset(font)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        font.save(str(tmp))
        os.replace(tmp, target)  # atomic: another process may be building it too
    except Exception:  # noqa: BLE001 - the whole font still works, only slower
        log.exception("could not build the PDF font subset; using the whole font")
