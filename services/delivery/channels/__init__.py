"""Channels: how a result reaches the clinic.  Each attempt ends in an :class:`Outcome`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    detail: str = ""
    # Retrying cannot help (e.g. the clinic's SCP refuses the SOP class): dead-letter now.
    permanent: bool = False
    sent: tuple[str, ...] = field(default=())  # SOP Instance UIDs stored by this attempt
