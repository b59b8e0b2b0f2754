"""The consortium patient identity (EMPI): a national identifier with its issuer.

The resident ID number (居民身份证号, GB 11643-1999): checked by its check digit, shown masked.

It is patient data: the order keeps it for the worklist (Other Patient IDs Sequence, so the
modality carries it into the study); the API shows it masked (``4101**********1234``), and no
event, audit record, log line or error message carries it.  I/O free.

A patient's consortium identity is ``ISSUER|VALUE`` (:func:`key`) of a valid identifier of an
issuer in :data:`ISSUERS`: the resident ID (checked by its check digit) or the resident health
card number (居民健康卡号, its shape only).  Name + birth date never make one (docs/identity.md).
"""

from __future__ import annotations

import re
from datetime import date

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


# Issuer of Patient ID (0010,0021) -> why a value is not an identifier of that issuer (None: it is).
ISSUERS = {ISSUER: problem, HEALTH_CARD_ISSUER: _health_card_problem}


def key(issuer: str, value: str) -> str | None:
    """The consortium identity of ``value`` issued by ``issuer``, or None (unknown issuer, invalid value)."""
    issuer = issuer.strip().upper()
    check = ISSUERS.get(issuer)
    if check is None or not value or check(value) is not None:
        return None
    return f"{issuer}|{normalized(value)}"


def first_key(pairs: "list[tuple[str, str]] | tuple[tuple[str, str], ...]") -> str:
    """The identity of the first valid (issuer, value) of Other Patient IDs Sequence; "" if none."""
    for issuer, value in pairs:
        found = key(issuer, value)
        if found:
            return found
    return ""


def masked_key(identity: str | None) -> str | None:
    """``CN_RESIDENT_ID|4101**********1234``: an identity as an API answer shows it."""
    if not identity or "|" not in identity:
        return identity
    issuer, value = identity.split("|", 1)
    return f"{issuer}|{mask(value)}"
