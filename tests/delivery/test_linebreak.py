"""Chinese line breaking (禁则处理) of the report document: no line starts with closing punctuation
or ends with opening punctuation; Latin words and numbers stay whole; every line fits."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from fpdf import FPDF
from pypdf import PdfReader

from services.delivery.linebreak import CLOSING, OPENING, break_lines, units
from services.delivery.settings import DEFAULT_FONT


def em(text: str) -> float:
    """A typewriter: a Chinese character (or full-width mark) is 1, anything else 0.5."""
    return sum(1.0 if ord(ch) > 0x2E7F else 0.5 for ch in text)


def test_closing_punctuation_never_starts_a_line_the_character_before_comes_down_with_it():
    # Ten to a line: the "，" would be the 11th character.
    assert break_lines("一二三四五六七八九十，十一", 10, em) == ["一二三四五六七八九", "十，十一"]
    assert break_lines("一二三四五六七八九十。”再", 10, em) == ["一二三四五六七八九", "十。”再"]
    assert break_lines("一二三四五六七八九十）。", 11, em) == ["一二三四五六七八九", "十）。"]


def test_opening_punctuation_never_ends_a_line_it_goes_down_with_what_it_opens():
    assert break_lines("一二三四五六七八九《十一》", 10, em) == ["一二三四五六七八九", "《十一》"]
    assert break_lines("一二三四五六七八“（九十", 10, em) == ["一二三四五六七八", "“（九十"]


def test_latin_words_and_numbers_stay_whole_and_a_newline_ends_a_paragraph():
    text = "右下肺见结节，大小约12.5mm×10.3mm，CT值35HU。\n01. 建议复查"
    lines = break_lines(text, 10, em)
    assert "".join(lines) == text.replace("\n", "")
    for unit in ("12.5mm×10.3mm", "35HU"):
        assert any(unit in line for line in lines), lines
    assert lines[-1] == "01. 建议复查"
    assert break_lines("", 10, em) == [""] and break_lines("a\n\nb", 10, em) == ["a", "", "b"]


def test_a_run_longer_than_a_line_is_broken_and_spaces_at_a_break_are_dropped():
    url = "https://yilian.example.cn/api/v1/reports/rp-0123456789/verification"
    lines = break_lines(url, 10, em)
    assert "".join(lines) == url and all(em(line) <= 10 for line in lines)
    assert break_lines("abcd efgh ijkl", 3, em) == ["abcd", "efgh", "ijkl"]


LONG = ("右下肺野见斑片状高密度影，边缘模糊，其内可见支气管充气征；病灶周围见少许磨玻璃影。"
        "纵隔居中，气管及主支气管通畅，未见狭窄或阻塞。心影大小、形态正常（心胸比约0.48）。"
        "双侧胸腔未见积液，双侧肋膈角锐利。所见骨质结构未见明显异常。“肺纹理增粗”与既往（2025年）片比较："
        "略有进展？建议结合临床！并于抗感染治疗后两周复查胸部CT平扫，必要时行增强扫描，以除外其他病变。")


@pytest.mark.skipif(not Path(DEFAULT_FONT).is_file(), reason="fonts-wqy-microhei is not installed")
@pytest.mark.parametrize("width", [60.0, 87.5, 120.0, 177.0])
def test_with_the_real_font_every_line_fits_and_keeps_the_rules(width):
    pdf = FPDF()
    pdf.add_font("cjk", fname=DEFAULT_FONT)
    pdf.set_font("cjk", size=10.5)
    lines = break_lines(LONG, width, pdf.get_string_width)
    assert "".join(lines) == LONG
    assert all(pdf.get_string_width(line) <= width for line in lines)
    assert not [line for line in lines[1:] if line[0] in CLOSING], lines
    assert not [line for line in lines[:-1] if line[-1] in OPENING], lines
    # Like a word processor: lines are full but for what the rules moved (at most two characters).
    for line, after in zip(lines, lines[1:]):
        assert pdf.get_string_width(line + "".join(units(after)[:3])) > width, (line, after)


# Punctuation every few characters: a break by characters would start some line with one.
DENSE = "（1）双肺纹理增多、增粗，呈“网格状”改变；（2）主动脉结钙化……建议：定期复查！" * 4


def pdf_lines(data: bytes) -> list[str]:
    return [line.strip() for page in PdfReader(io.BytesIO(data)).pages
            for line in page.extract_text().splitlines() if line.strip()]


def starts_badly(lines: list[str]) -> list[str]:
    return [line for line in lines if line[0] in CLOSING or re.search(r"[（《「『“‘]$", line)]


@pytest.mark.skipif(not Path(DEFAULT_FONT).is_file(), reason="fonts-wqy-microhei is not installed")
@pytest.mark.parametrize("page", ["A4", "A5"])
def test_the_rendered_report_breaks_its_lines_by_the_rules(page):
    """Rendered, read back line by line (pypdf) and pictured (test-artifacts/delivery/report-kinsoku-*.png)."""
    from services.core.localtime import LocalTime
    from services.delivery.model import result_from_report
    from services.delivery.pdf import Layout, render

    from .test_report_document import IMAGING, ORDER, STUDY, URL, _picture
    from .test_documents import CREATED
    result = result_from_report({**IMAGING, "findings": LONG + "\n" + DENSE,
                                 "impression": "1. 右下肺炎（细菌性可能），建议抗感染治疗后复查。\n2. 心、膈未见明显异常。"},
                                at=CREATED)
    data = render(result, study=STUDY, institution="城关镇卫生院", centre="县域医学影像诊断中心", font=DEFAULT_FONT,
                  local=LocalTime.named(), layout=Layout(page=page, verification_url=URL, order=ORDER))
    lines = pdf_lines(data)
    body = [line for line in lines if len(line) > 4 and line in LONG]
    assert len(body) >= 4 and "".join(body) == LONG, lines
    assert not starts_badly(lines), starts_badly(lines)
    _picture(data, f"report-kinsoku-{page}")
