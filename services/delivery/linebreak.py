"""Line breaking for Chinese text as a Chinese word processor does it (禁则处理).  Pure: no I/O.

A line may break between any two Chinese characters, and at a space; a run of Latin letters and
digits (``CT``, ``3.5cm``, ``QTc``) stays whole unless it is longer than a line.  Two rules
(GB/T 15834 标点符号用法; the kinsoku of every CJK typesetter):

* no line begins with closing punctuation (，。、；：？！）》」』”’ …): it is kept on the line
  before, and the character before it comes down with it when the line has no room;
* no line ends with opening punctuation (（《「『“‘ …): it goes down with what it opens.

``measure`` gives a string's width in the caller's unit (fpdf's ``get_string_width`` for the
current font); every line returned fits ``width`` unless one unbreakable unit alone does not.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Closing punctuation and marks that must not start a line (full width, then half width).
CLOSING = frozenset("，。、；：？！）》」』”’】〕〉〗〙〛…‥—～·％‰℃°" ",.;:?!)]}%'\"")
# Opening punctuation that must not end a line.
OPENING = frozenset("（《「『“‘【〔〈〖〘〚" "([{")
# Units: a run of Latin letters / digits (with the marks that live inside numbers), or one other
# character.  A dash pair (——) and an ellipsis pair (……) are one unit: never split across lines.
_UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+\-/×_#]*|——|……|\s+|.", re.DOTALL)


def units(text: str) -> list[str]:
    return _UNIT.findall(text)


def break_lines(text: str, width: float, measure: Callable[[str], float]) -> list[str]:
    """``text`` as lines no wider than ``width``; a newline in ``text`` ends a paragraph."""
    out: list[str] = []
    for paragraph in text.split("\n"):
        out.extend(_paragraph(paragraph, width, measure) or [""])
    return out


def _forbidden(line: list[str], rest: list[str]) -> bool:
    """Whether breaking between ``line`` and ``rest`` breaks a rule."""
    return bool(line and rest) and (rest[0][0] in CLOSING or line[-1][-1] in OPENING)


def _paragraph(text: str, width: float, measure: Callable[[str], float]) -> list[str]:
    lines: list[str] = []
    line: list[str] = []
    for unit in _split_long(units(text), width, measure):
        if not line and unit.isspace():
            continue  # a break swallows the space it happened at
        if not line or measure("".join(line) + unit) <= width:
            line.append(unit)
            continue
        # No room: the unit starts the next line, and takes along what the rules say must go with it.
        carry = [unit]
        while len(line) > 1 and (_forbidden(line, carry) or line[-1].isspace()):
            carry.insert(0, line.pop())
        while line and line[-1].isspace():
            line.pop()
        lines.append("".join(line))
        while carry and carry[0].isspace():
            carry.pop(0)
        line = carry
        while len(line) > 1 and measure("".join(line)) > width:  # carried more than a line holds
            lines.append(line.pop(0))
    if line:
        lines.append("".join(line).rstrip())
    return lines


def _split_long(found: list[str], width: float, measure: Callable[[str], float]) -> list[str]:
    """Latin runs longer than a line are broken into characters (a URL, a long code)."""
    out: list[str] = []
    for unit in found:
        if len(unit) > 1 and not unit.isspace() and measure(unit) > width:
            out.extend(unit)
        else:
            out.append(unit)
    return out
