"""When to try a failed delivery again: :class:`~services.core.backoff.Backoff` (in core, since
the gateway's storage commitment reports retry the same way)."""

from __future__ import annotations

from ..core.backoff import Backoff

__all__ = ["Backoff"]
