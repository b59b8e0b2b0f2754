"""Channels: how a result reaches the clinic.  Each attempt ends in an :class:`Outcome`."""

from __future__ import annotations

from ...core.cstore import Outcome

__all__ = ["Outcome"]
