"""Instants in the consortium's time zone: for people, and for DICOM.

Yilian keeps every instant in UTC (ISO 8601 with ``Z``, as events and documents carry them).
What a person reads (a PDF, a reminder, a dashboard) and what a DICOM object says (DA, TM,
DT, Timezone Offset From UTC (0008,0201), PS3.3 C.12.1.1.8) is in the consortium's zone
(``timezone:`` in the consortium file, ``YILIAN_TIMEZONE``; China Standard Time by default),
so a clinic's PACS files a report signed at 23:44 in Beijing under that day, not at 15:44.
I/O free.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Shanghai"

Instant = str | float | datetime


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (``Asia/Shanghai``); ValueError naming it when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as {DEFAULT_TIMEZONE}): "
                         f"{exc}") from None


def utc(value: Instant) -> datetime:
    """An aware UTC datetime from ISO 8601 text (``…Z`` or with an offset), a Unix time or a datetime."""
    if isinstance(value, datetime):
        ts = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    elif isinstance(value, (int, float)):
        ts = datetime.fromtimestamp(value, UTC)
    else:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if ts.tzinfo is None:
            raise ValueError(f"instant {value!r} has no offset; Yilian's instants are UTC with 'Z'")
    return ts.astimezone(UTC)


def offset_text(offset: timedelta | None) -> str:
    """``+0800`` (the form of (0008,0201) and of a DT suffix)."""
    minutes = int((offset or timedelta()).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


@dataclass(frozen=True, slots=True)
class DicomTime:
    """One instant as DICOM writes it in local time (PS3.5 6.2: DA, TM, DT)."""

    date: str  # DA  20261202
    time: str  # TM  234458.433
    offset: str  # Timezone Offset From UTC (0008,0201)  +0800

    @property
    def datetime(self) -> str:
        """DT with its offset, so it means the same instant without (0008,0201): 20261202234458.433+0800."""
        return self.date + self.time + self.offset


@dataclass(frozen=True, slots=True)
class LocalTime:
    """The consortium's zone, and the two ways Yilian writes an instant in it."""

    tz: ZoneInfo

    @classmethod
    def named(cls, name: str = DEFAULT_TIMEZONE) -> LocalTime:
        return cls(zone(name))

    @property
    def name(self) -> str:
        return self.tz.key

    def local(self, value: Instant) -> datetime:
        return utc(value).astimezone(self.tz)

    def for_people(self, value: Instant) -> str:
        """``2026-12-02 23:44``: what a PDF, a reminder or a screen shows."""
        return self.local(value).strftime("%Y-%m-%d %H:%M")

    def iso(self, value: Instant) -> str:
        """ISO 8601 with the local offset, for machine readers that show it (``2026-12-02T23:44:58.433+08:00``)."""
        return self.local(value).isoformat(timespec="milliseconds")

    def dicom(self, value: Instant) -> DicomTime:
        ts = self.local(value)
        return DicomTime(ts.strftime("%Y%m%d"), ts.strftime("%H%M%S.") + f"{ts.microsecond // 1000:03d}",
                         offset_text(ts.utcoffset()))


def dicom_date_for_people(da: str | None) -> str:
    """A DICOM DA (``19580312``) as ``1958-03-12``; anything else unchanged."""
    text = (da or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def age_in_years(birth_da: str | None, on_da: str | None) -> int | None:
    """Completed years between two DICOM dates (岁 at the study date); None if either is not a date."""
    try:
        born = datetime.strptime((birth_da or "").strip(), "%Y%m%d").date()
        on = datetime.strptime((on_da or "").strip(), "%Y%m%d").date()
    except ValueError:
        return None
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return years if years >= 0 else None
