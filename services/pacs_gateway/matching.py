"""Attribute matching for C-FIND, as PS3.4 C.2.2.2 defines it; I/O free.

A query value is parsed once into a :class:`Matcher` (by the element's VR) that

* says whether a stored value matches (:meth:`Matcher.matches`), and
* offers a store filter that selects a superset of the matches
  (:meth:`Matcher.store_condition`), so the database does the coarse work and
  Python the exact work.

Kinds (C.2.2.2.1-C.2.2.2.5 and C.2.2.2.8):

* universal: empty value, matches everything (the key is only a return key);
* single value: exact; person names ignore case (``zhang^san`` = ``ZHANG^SAN``);
* wildcard: ``*`` any run, ``?`` one character (not for dates, times, UIDs);
* range: ``a-b``, ``-b``, ``a-`` for DA, TM and DT;
* list: backslash-separated values, matching any of them (list of UIDs).

Person names also match per component group, so ``张*`` finds ``Zhang^San=张^三``.
Sequence matching is not supported: a sequence key is a return key only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

RANGE_VRS = frozenset({"DA", "TM", "DT"})
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
WILDCARDS = frozenset("*?")


class MatchingError(ValueError):
    """The query value cannot be a matching key (bad range, bad date)."""


def normalize_name(value: str) -> str:
    """A person name for comparison: upper case, no trailing empty components."""
    groups = [g.rstrip("^").strip() for g in value.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups).upper()


def name_forms(value: str) -> list[str]:
    """The whole name and each non-empty component group, normalised."""
    whole = normalize_name(value)
    forms = [whole]
    if "=" in whole:
        forms.extend(g for g in whole.split("=") if g and g not in forms)
    return forms


def _normalize_temporal(vr: str, value: str) -> str:
    value = value.strip()
    if vr == "DA":
        value = value.replace(".", "")  # ACR-NEMA style 2024.01.31
        if not re.fullmatch(r"\d{8}", value):
            raise MatchingError(f"bad date {value!r} (use YYYYMMDD)")
    elif vr == "TM":
        value = value.replace(":", "")
        if not re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", value):
            raise MatchingError(f"bad time {value!r} (use HHMMSS.FFFFFF)")
    elif vr == "DT":
        if not re.fullmatch(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?", value):
            raise MatchingError(f"bad date-time {value!r}")
        value = re.sub(r"[+-]\d{4}$", "", value)  # offsets are not compared
    return value


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True)
class Matcher:
    """One parsed matching key."""

    vr: str
    kind: str  # "universal" | "single" | "wildcard" | "range" | "list"
    values: tuple[Any, ...] = ()  # single/wildcard: (value,); range: (low, high); list: sub-matchers

    # --- matching -----------------------------------------------------------------
    def matches(self, stored: Any) -> bool:
        """Whether the stored value (a string, a number, a list for multi-valued, or None) matches."""
        if self.kind == "universal":
            return True
        if isinstance(stored, (list, tuple)):
            return any(self.matches(v) for v in stored)
        if self.kind == "list":
            return any(m.matches(stored) for m in self.values)
        if stored is None or stored == "":
            return False  # an empty stored value matches only universal matching
        text = str(stored)
        if self.kind == "range":
            return self._in_range(text)
        if self.vr == "PN":
            forms = name_forms(text)
            if self.kind == "single":
                return normalize_name(self.values[0]) in forms
            rx = _wildcard_regex(normalize_name(self.values[0]))
            return any(rx.fullmatch(f) for f in forms)
        if self.kind == "single":
            if self.vr in RANGE_VRS:
                return self._in_range_of(text, self.values[0], self.values[0])
            if self.vr in ("IS", "DS", "US", "UL", "SS", "SL"):
                try:
                    return float(text) == float(self.values[0])
                except ValueError:
                    return False
            return text.strip() == self.values[0]
        return bool(_wildcard_regex(self.values[0]).fullmatch(text.strip()))

    def _in_range(self, text: str) -> bool:
        low, high = self.values
        return self._in_range_of(text, low, high)

    def _in_range_of(self, text: str, low: str | None, high: str | None) -> bool:
        try:
            value = _normalize_temporal(self.vr, text)
        except MatchingError:
            return False
        # Compare at the precision the bound was given: "-1030" includes 10:30:59.
        if low is not None and value[:len(low)] < low:
            return False
        if high is not None and value[:len(high)] > high:
            return False
        return True

    # --- push-down ------------------------------------------------------------------
    def store_condition(self) -> Any:
        """A condition in the store's filter language selecting a superset of matches, or None."""
        if self.kind == "universal":
            return None
        if self.kind == "list":
            if all(m.kind == "single" for m in self.values) and self.vr not in ("PN",) + tuple(RANGE_VRS):
                return {"$in": [m.values[0] for m in self.values]}
            return None
        if self.kind == "range":
            low, high = self.values
            if self.vr != "DA":
                return None  # stored times vary in precision; filter in Python
            cond = {}
            if low is not None:
                cond["$gte"] = low
            if high is not None:
                cond["$lte"] = high
            return cond
        pattern = self.values[0]
        if self.vr == "PN":
            return None  # a query may match any component group of the stored name: Python only
        if self.kind == "single":
            if self.vr in RANGE_VRS or self.vr in ("IS", "DS", "US", "UL", "SS", "SL"):
                return pattern if self.vr == "DA" else None
            return pattern
        head = re.split(r"[*?]", pattern, maxsplit=1)[0]
        return {"$prefix": head} if head else None


UNIVERSAL = Matcher("", "universal")


def parse(vr: str, value: Any) -> Matcher:
    """Parse a query value (a decoded str, a list for multi-valued elements, or None)."""
    if value is None:
        return Matcher(vr, "universal")
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        text = str(value)
        items = text.split("\\") if "\\" in text else [text]
    items = [i.strip() if vr != "PN" else i.strip(" ") for i in items]
    if len(items) > 1:
        subs = tuple(_parse_one(vr, i) for i in items if i != "")
        if not subs:
            return Matcher(vr, "universal")
        if any(s.kind == "universal" for s in subs):
            return Matcher(vr, "universal")
        return subs[0] if len(subs) == 1 else Matcher(vr, "list", subs)
    return _parse_one(vr, items[0])


def _parse_one(vr: str, text: str) -> Matcher:
    if text == "" or (text == "*" and vr in WILDCARD_VRS | {"UI"}):
        return Matcher(vr, "universal")
    if vr in RANGE_VRS and _is_range(vr, text):
        low, _, high = text.partition("-") if vr != "DT" else _split_dt_range(text)
        low_n = _normalize_temporal(vr, low) if low.strip() else None
        high_n = _normalize_temporal(vr, high) if high.strip() else None
        if low_n is None and high_n is None:
            return Matcher(vr, "universal")
        if low_n is not None and high_n is not None and low_n > high_n[:len(low_n)]:
            raise MatchingError(f"empty range {text!r}: start after end")
        return Matcher(vr, "range", (low_n, high_n))
    if vr in RANGE_VRS:
        return Matcher(vr, "single", (_normalize_temporal(vr, text),))
    if vr in WILDCARD_VRS and WILDCARDS & set(text):
        return Matcher(vr, "wildcard", (text,))
    return Matcher(vr, "single", (text,))


def _is_range(vr: str, text: str) -> bool:
    if vr == "DT":
        return _split_dt_range(text) != (text, "", "")
    return "-" in text


def _split_dt_range(text: str) -> tuple[str, str, str]:
    # A DT may carry a "-hhmm" offset; the range hyphen is the one not followed by exactly 4 digits at the end.
    for i, ch in enumerate(text):
        if ch != "-":
            continue
        rest = text[i + 1:]
        if re.fullmatch(r"\d{4}", rest) and i >= 4:
            continue  # a UTC offset
        return text[:i], "-", rest
    return text, "", ""


def matches_all(matchers: Iterable[tuple[str, Matcher]], record: dict[str, Any]) -> bool:
    """Whether every ``(keyword, matcher)`` matches ``record[keyword]``."""
    return all(m.matches(record.get(keyword)) for keyword, m in matchers)
