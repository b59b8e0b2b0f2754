"""The report PDF's font is parsed once per process (issue 14: fpdf2 parsed it anew for every
document, ~80 % of a report's CPU), and the documents are the same, byte for byte, as fpdf2
alone makes them: same glyphs, same subset, same widths."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import pytest
from fontTools import subset
from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.fonts import TTFFont as TTFFont_

from services.core.localtime import LocalTime
from services.delivery import pdf
from services.delivery.model import result_from_report
from services.delivery.settings import DEFAULT_FONT

from .test_documents import CREATED, STUDY
from .test_report_document import ECG_REPORT, ECG_STUDY, IMAGING, ORDER, URL

pytestmark = pytest.mark.skipif(not Path(DEFAULT_FONT).is_file(), reason="fonts-wqy-microhei is not installed")

WHEN = dt.datetime(2026, 12, 2, 17, 45, tzinfo=dt.UTC)  # fpdf2 writes the creation date: fixed here
RARE = {**STUDY, "patient_name": "Wang^Yan=王^龑"}  # 龑 is outside GB2312: the whole font


class _FpdfAlone(FPDF):
    """The report document as fpdf2 makes it by itself: add_font parses the file every time."""

    footer = pdf._Document.footer


def _documents(font: str) -> list[bytes]:
    local = LocalTime.named()
    imaging = result_from_report(IMAGING, at=CREATED)
    return [
        pdf.render(imaging, study=STUDY, institution="城关镇卫生院", centre="县域医学影像诊断中心", font=font,
                   local=local, layout=pdf.Layout(verification_url=URL, recognition_mark="HR", order=ORDER)),
        pdf.render(imaging, study=RARE, institution="城关镇卫生院", centre="县域医学影像诊断中心", font=font,
                   local=local, layout=pdf.Layout(page="A5", verification_url=URL)),
        pdf.render(result_from_report(ECG_REPORT, at=CREATED), study=ECG_STUDY, institution="城关镇卫生院",
                   centre="县域心电诊断中心", font=font, local=local,
                   layout=pdf.Layout(exam="十二导联常规心电图", sections=("波形分析", "心电图诊断"))),
    ]


def _render(font: str, *, alone: bool = False) -> list[bytes]:
    with mock.patch("fpdf.fpdf.datetime") as clock:
        clock.now.return_value = WHEN
        if alone:
            with mock.patch.object(pdf, "_Document", _FpdfAlone):
                return _documents(font)
        return _documents(font)


@pytest.fixture(scope="module")
def small_font(tmp_path_factory) -> str:
    """A .ttf of a few hundred glyphs (the cached common subset's kind of file, quicker to make)."""
    path = tmp_path_factory.mktemp("fonts") / "small.ttf"
    font = TTFont(DEFAULT_FONT, fontNumber=0)
    options = subset.Options()
    options.notdef_outline, options.glyph_names, options.hinting, options.layout_features = True, True, False, []
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(map(str, (IMAGING, STUDY, ORDER, ECG_REPORT, ECG_STUDY))) + "".join(
        chr(c) for c in range(0x20, 0x7F)) + Path(pdf.__file__).read_text("utf-8") + "县域城关镇卫生院（）：波形分析")
    subsetter.subset(font)
    font.save(str(path))
    return str(path)


@pytest.mark.parametrize("which", ["small", "whole collection"])
def test_documents_are_the_same_bytes_as_fpdf2_alone_makes_them(which, small_font):
    font = small_font if which == "small" else DEFAULT_FONT
    alone = _render(font, alone=True)
    assert _render(font) == alone
    assert _render(font) == alone  # the second time from the font parsed by the first


def test_a_font_file_is_parsed_once_per_process(small_font):
    _render(small_font)
    with mock.patch.object(TTFFont_, "__init__", side_effect=AssertionError("the font file is parsed again")):
        documents = _render(small_font)
    assert len(documents) == 3 and all(d.startswith(b"%PDF") for d in documents)


def test_documents_rendered_in_threads_at_once_are_unchanged(small_font):
    """YILIAN_DELIVERY_PDF_PROCESSES=0 renders in threads: the shared font is never written to."""
    expected = _render(small_font, alone=True)
    start = threading.Barrier(4)

    def one(_: int) -> list[bytes]:
        start.wait(timeout=30)
        return _documents(small_font)

    with mock.patch("fpdf.fpdf.datetime") as clock:
        clock.now.return_value = WHEN
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(4)))
    assert all(r == expected for r in results)
