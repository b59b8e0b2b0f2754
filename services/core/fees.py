"""The consortium's fee schedule (资金结算): what each service costs and how the fee is split.

Part of the consortium file (``settlement:``), so it is data, validated at load, never code.
Amounts are kept in fen (分, integers): no float ever touches money.  A service is a remote
reading of a kind (``imaging`` by modality, ``ecg``), a remote ``consultation``, or an
``addendum`` (a released correction; free unless the schedule prices it).  Each fee is valid
over local dates ``[valid_from, valid_to]``; the reading institution receives ``reading_share``
of it and the requesting institution keeps the rest.  No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

SERVICES = ("imaging", "ecg", "consultation", "addendum")


@dataclass(frozen=True, slots=True)
class Fee:
    service: str
    fee_fen: int
    reading_share: Decimal  # of the fee, to the reading (serving) institution
    valid_from: date
    valid_to: date | None = None
    modalities: tuple[str, ...] = ()  # empty: any modality of the service

    @property
    def id(self) -> str:
        return f"{self.service}:{','.join(self.modalities) or '*'}@{self.valid_from.isoformat()}"

    def covers(self, service: str, modality: str | None, day: date) -> bool:
        return (self.service == service and (not self.modalities or modality in self.modalities)
                and self.valid_from <= day and (self.valid_to is None or day <= self.valid_to))

    def split(self) -> tuple[int, int]:
        """(to the reading institution, to the requesting one), fen; the reading share rounds half up."""
        reading = int((Decimal(self.fee_fen) * self.reading_share).quantize(Decimal(1), ROUND_HALF_UP))
        return reading, self.fee_fen - reading


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    currency: str = "CNY"
    fees: tuple[Fee, ...] = field(default_factory=tuple)

    def fee_for(self, service: str, modality: str | None, day: date) -> Fee | None:
        """The fee valid on ``day``: a row naming the modality wins over a row for any modality."""
        matches = [f for f in self.fees if f.covers(service, modality, day)]
        matches.sort(key=lambda f: (not f.modalities, -f.valid_from.toordinal()))
        return matches[0] if matches else None


def fen(value: Any) -> int:
    """Yuan (a number or a string such as ``"30.50"``) to fen; more than two decimals is an error."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not an amount of yuan") from None
    if amount < 0 or amount != amount.quantize(Decimal("0.01")):
        raise ValueError(f"{value!r}: a fee is a non-negative amount of yuan with at most two decimals")
    return int(amount * 100)


def yuan(amount_fen: int) -> str:
    sign = "-" if amount_fen < 0 else ""
    return f"{sign}{abs(amount_fen) // 100}.{abs(amount_fen) % 100:02d}"


def overlapping(fees: tuple[Fee, ...]) -> tuple[Fee, Fee] | None:
    """Two rows for the same service and modality whose validity overlaps (the schedule must be unambiguous)."""
    for i, a in enumerate(fees):
        for b in fees[i + 1:]:
            same = a.service == b.service and (set(a.modalities) & set(b.modalities)
                                              or (not a.modalities and not b.modalities))
            if same and a.valid_from <= (b.valid_to or date.max) and b.valid_from <= (a.valid_to or date.max):
                return a, b
    return None
