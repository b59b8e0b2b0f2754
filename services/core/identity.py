"""The consortium patient identity (EMPI): a national identifier with its issuer.

The resident ID number (居民身份证号, GB 11643-1999): checked by its check digit, shown masked.

It is patient data: the order keeps it for the worklist (Other Patient IDs Sequence, so the
modality carries it into the study); the API shows it masked (``4101**********1234``), and no
event, audit record, log line or error message carries it.  I/O free.

A patient's consortium identity is ``ISSUER|VALUE`` (:func:`key`) of a valid identifier of an
accepted issuer: by default (:data:`ISSUERS`) the resident ID (checked by its check digit) and the
resident health card number (居民健康卡号, its shape only); the consortium file may name others,
each with its check (``identity.issuers``, :class:`Issuer`).  Name + birth date never make one
(docs/identity.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

SHAPE = re.compile(r"^\d{17}[\dX]$")
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK = "10X98765432"  # ISO 7064 MOD 11-2: sum mod 11 -> check character
ISSUER = "CN_RESIDENT_ID"  # Issuer of Patient ID (0010,0021) of the resident ID in Other Patient IDs


HEALTH_CARD_ISSUER = "CN_HEALTH_CARD"  # 居民健康卡号
HEALTH_CARD_SHAPE = re.compile(r"^[0-9A-Z]{8,32}$")


def check_digit(first17: str) -> str:
    return CHECK[sum(int(d) * w for d, w in zip(first17, WEIGHTS)) % 11]


def problem(value: str) -> str | None:
    """Why ``value`` is not a resident ID number (``None``: it is one).  Never repeats the value."""
    text = value.strip().upper()
    if not SHAPE.match(text):
        return "must be 18 characters: 17 digits and a digit or X"
    try:
        date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        return "has no valid birth date in positions 7-14"
    if check_digit(text[:17]) != text[17]:
        return "fails its check digit"
    return None


def normalized(value: str) -> str:
    return value.strip().upper()


def mask(value: str | None) -> str | None:
    """``4101**********1234``: the region and the last four, enough to tell two patients apart at a desk."""
    if not value:
        return value
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def _health_card_problem(value: str) -> str | None:
    return None if HEALTH_CARD_SHAPE.match(value.strip().upper()) else "must be 8-32 digits or capital letters"


CHECKS = ("resident_id", "health_card", "regex")  # how an accepted issuer's identifiers are checked


@lru_cache(maxsize=64)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True)
class Issuer:
    """An accepted Issuer of Patient ID (0010,0021) and how its identifiers are checked: the resident
    ID's check digit, the health card's shape, or a regular expression the whole (upper-cased) value matches."""

    name: str
    check: str = "regex"  # one of CHECKS
    pattern: str | None = None  # check "regex" only

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not an identifier of this issuer (None: it is); never repeats the value."""
        if self.check == "resident_id":
            return problem(value)
        if self.check == "health_card":
            return _health_card_problem(value)
        if self.pattern and _pattern(self.pattern).fullmatch(normalized(value)):
            return None
        return f"does not match the pattern of {self.name}"


Issuers = tuple[Issuer, ...]
# The default when the consortium file names none (docs/identity.md).
ISSUERS: Issuers = (Issuer(ISSUER, "resident_id"), Issuer(HEALTH_CARD_ISSUER, "health_card"))


def key(issuer: str, value: str, issuers: Issuers = ISSUERS) -> str | None:
    """The consortium identity of ``value`` issued by ``issuer``, or None (not an accepted issuer, invalid value)."""
    issuer = issuer.strip().upper()
    accepted = next((i for i in issuers if i.name == issuer), None)
    if accepted is None or not value or accepted.problem(value) is not None:
        return None
    return f"{issuer}|{normalized(value)}"


def first_key(pairs: "list[tuple[str, str]] | tuple[tuple[str, str], ...]", issuers: Issuers = ISSUERS) -> str:
    """The identity of the first valid (issuer, value) of Other Patient IDs Sequence; "" if none."""
    for issuer, value in pairs:
        found = key(issuer, value, issuers)
        if found:
            return found
    return ""


def masked_key(identity: str | None) -> str | None:
    """``CN_RESIDENT_ID|4101**********1234``: an identity as an API answer shows it."""
    if not identity or "|" not in identity:
        return identity
    issuer, value = identity.split("|", 1)
    return f"{issuer}|{mask(value)}"
