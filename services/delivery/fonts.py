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

import copy
import hashlib
import logging
import multiprocessing
import os
import threading
from functools import lru_cache
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

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


# --- fonts parsed once per process ----------------------------------------------------------
#
# fpdf2 parses the TrueType file for every document (``add_font``) and, at ``output``, subsets
# the parsed font in place to the glyphs the document used: two passes over ~13,000 glyphs,
# about 80 % of a report's CPU.  :class:`SharedFonts` parses each font file once per process and
# gives every document (1) a copy of the parsed font's metrics, as fpdf2's own ``__deepcopy__``
# shares them with its recorder, and (2) at output, a font holding only the glyphs that document
# used (and their components), so fpdf2's subsetting has a few hundred glyphs to go through.
# What fpdf2 writes is the same, byte for byte (tests/delivery/test_fonts.py).


class _Parsed:
    """One font file, parsed once: fpdf2's metrics and the fontTools tables that depend on the glyph order."""

    # The tables that depend on the glyph order (restricted per document): decompiled once, here.
    # The others (head, hhea, OS/2, name, ...) are small and read from the file for each document.
    ORDERED = ("glyf", "hmtx", "vmtx", "cmap", "post")

    def __init__(self, path: str) -> None:
        from fpdf import FPDF
        from fpdf.fonts import TTFFont
        self.path = path
        self.data = Path(path).read_bytes()
        self.template = TTFFont(FPDF(), Path(path), "template", "")
        self.master = self.template.ttfont
        for tag in self.ORDERED:
            if tag in self.master:
                self.master[tag]  # decompiled now, once
        self.order = self.master.getGlyphOrder()
        self._decoded: dict[str, Any] = {}

    def for_document(self, pdf: Any, fontkey: str, style: str) -> Any:
        from fpdf.enums import TextEmphasis
        from fpdf.fonts import SubsetMap
        font = copy.copy(self.template)  # shares the parsed, read-only parts (cmap, desc, glyph ids)
        font.i = len(pdf.fonts) + 1
        font.fontkey = fontkey
        font.emphasis = TextEmphasis.coerce(style)
        font.cw = copy.copy(self.template.cw)
        font.missing_glyphs = []
        font.biggest_size_pt = 0
        font.subset = SubsetMap(font)
        font.ttfont = self.master  # until output (:meth:`embed`): read only
        return font

    def glyphs_for(self, used: "list[str] | tuple[str, ...]") -> list[str]:
        """``used`` with what fpdf2's subsetter adds (the first four glyphs) and composite glyphs'
        components, in the font's order (so the subset's glyph ids are what they would be)."""
        glyf = self.master["glyf"].glyphs
        keep = set(self.order[:4]) | {g for g in used if g in glyf}
        todo = list(keep)
        while todo:
            for component in glyf[todo.pop()].getComponentNames(self.master["glyf"]):
                if component not in keep:
                    keep.add(component)
                    todo.append(component)
        return [g for g in self.order if g in keep]

    def _glyph(self, name: str) -> Any:
        """A copy of the glyph, decoded (once per process) with the whole font's glyph order: a composite
        names its components by glyph id, and fpdf2 decodes each glyph it embeds to recompute its bounds.
        A shallow copy: saving the font reads the outline, and writes only the copy's own bounds."""
        decoded = self._decoded.get(name)
        if decoded is None:
            decoded = copy.copy(self.master["glyf"].glyphs[name])
            decoded.expand(self.master["glyf"])
            self._decoded[name] = decoded
        return copy.copy(decoded)

    def embed(self, used: "list[str] | tuple[str, ...]") -> Any:
        """A fontTools font of the glyphs ``used`` only, for fpdf2 to subset (in place) and embed:
        the glyph-order tables are restricted copies of the parsed ones, the others read from the file."""
        import io
        from fontTools import ttLib
        names = self.glyphs_for(used)
        kept = set(names)
        font = ttLib.TTFont(io.BytesIO(self.data), lazy=True, recalcTimestamp=False,
                            fontNumber=self.template.collection_font_number)
        font.setGlyphOrder(names)
        # Only copies are changed (fpdf2's subsetting, glyphs expanded at save): the parsed font is shared
        # by every document of this process, in threads too (YILIAN_DELIVERY_PDF_PROCESSES=0).
        glyf = copy.copy(self.master["glyf"])
        glyf.glyphs = {n: self._glyph(n) for n in names}
        glyf.setGlyphOrder(names)
        font["glyf"] = glyf
        font["loca"] = ttLib.newTable("loca")  # written by glyf at save
        for tag in ("hmtx", "vmtx"):
            if tag in self.master:
                table = font[tag] = copy.copy(self.master[tag])
                table.metrics = {n: self.master[tag].metrics[n] for n in names}
        cmap = font["cmap"] = copy.copy(self.master["cmap"])
        cmap.tables = []
        for sub in self.master["cmap"].tables:
            sub = copy.copy(sub)
            sub.cmap = {u: g for u, g in sub.cmap.items() if g in kept}
            cmap.tables.append(sub)
        font["post"] = copy.copy(self.master["post"])
        return font


_PARSED: dict[tuple[str, int], _Parsed] = {}
_PARSING = threading.Lock()


def parsed(path: str) -> _Parsed:
    """The font file parsed in this process (again when the file changed)."""
    key = (path, os.stat(path).st_mtime_ns)
    with _PARSING:
        found = _PARSED.get(key)
        if found is None:
            found = _PARSED[key] = _Parsed(path)
    return found


def warm(path: str) -> None:
    """Parse ``path`` now in this process (the PDF worker, at start), not for its first document."""
    parsed(path)


class SharedFonts:
    """An FPDF mixin: :meth:`add_font` with a plain TrueType file reuses the font parsed in this
    process; :meth:`output` embeds each such font from the glyphs the document used."""

    def add_font(self, family: str | None = None, style: str = "", fname: Any = None, **kw: Any) -> None:
        if kw or not fname or not Path(fname).is_file():
            return super().add_font(family, style, fname, **kw)  # type: ignore[misc]
        font = parsed(str(fname))
        if font.template.color_font is not None or font.template.is_cff:
            return super().add_font(family, style, fname, **kw)  # type: ignore[misc]
        fontkey = f"{(family or Path(fname).stem).lower()}{''.join(sorted(style.upper()))}"
        if fontkey in self.fonts:  # type: ignore[attr-defined]
            return super().add_font(family, style, fname)  # type: ignore[misc]  # fpdf2 warns
        self.fonts[fontkey] = font.for_document(self, fontkey, style)  # type: ignore[attr-defined]
        self._shared_fonts = {**getattr(self, "_shared_fonts", {}), fontkey: font}

    def output(self, *args: Any, **kw: Any) -> Any:
        if kw.get("linearize") or "output_producer_class" in kw:
            # fpdf2 would then use another producer, which would subset the shared font itself, in place
            raise ValueError("a document with shared fonts is written by their own producer, not linearized")
        kw["output_producer_class"] = _producer()
        return super().output(*args, **kw)  # type: ignore[misc]

    def _embed_shared_fonts(self) -> None:
        """After the last text (footers, the page count) and before fpdf2 subsets the fonts."""
        for fontkey, font in getattr(self, "_shared_fonts", {}).items():
            document_font = self.fonts[fontkey]  # type: ignore[attr-defined]
            document_font.ttfont = font.embed(document_font.subset.get_all_glyph_names())


@lru_cache(maxsize=1)
def _producer() -> type:
    from fpdf.output import OutputProducer

    class SharedFontsProducer(OutputProducer):
        def bufferize(self) -> bytearray:
            self.fpdf._embed_shared_fonts()
            return super().bufferize()

    return SharedFontsProducer
