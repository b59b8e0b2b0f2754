"""The delivery service: signed results back to the clinic that asked (docs/delivery.md).

Consumes ``report.signed``, ``reading.returned`` (a re-scan notice for the clinic) and
``consultation.concluded`` (when that schema exists) as consumer group ``delivery``; a loop
works due deliveries (DICOM SR + PDF, webhook) and escalates unacknowledged critical results.  Any number of processes may run it: claims
are compare-and-set leases in the store.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # PEP 562: the service (PDF, fonts, signing, DICOM: ~1 s of imports) loads when first named, so a
    # command that only needs a submodule (``yilian --help`` builds the ``ca``/``verify`` parsers of
    # signature_cli) does not pay for it.
    if name in ("DeliveryService", "build"):
        from . import runner
        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
