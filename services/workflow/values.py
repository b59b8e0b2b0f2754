"""Checks of the free values a command carries (text, instants), shared by the consultation and
referral services: a wrong value is :class:`~.errors.Invalid` (422) saying which and why."""

from __future__ import annotations

import re
from typing import Any

from .errors import Invalid
from .leases import parse_iso


def text(value: Any, what: str, *, required: bool = True, limit: int = 4000) -> str:
    """A string (stripped) of at most ``limit`` characters; ``""`` for an absent optional one."""
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise Invalid(f"{what} must be a string")
    if required and not value.strip():
        raise Invalid(f"{what} must not be empty")
    if len(value) > limit:
        raise Invalid(f"{what} is longer than {limit} characters")
    return value.strip()


def timestamp(value: Any, what: str) -> float:
    """An ISO 8601 date-time with a time and a UTC offset, as epoch seconds."""
    if not isinstance(value, str):
        raise Invalid(f"{what} must be an ISO 8601 date-time")
    try:
        ts = parse_iso(value)
    except ValueError:
        raise Invalid(f"{what} {value!r} is not an ISO 8601 date-time") from None
    if "T" not in value or not (value.endswith("Z") or re.search(r"[+-]\d\d:\d\d$", value)):
        raise Invalid(f"{what} {value!r} needs a time and a UTC offset (e.g. 2026-05-01T09:00:00+08:00)")
    return ts
