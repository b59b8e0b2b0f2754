"""The DICOM channel: C-STORE the SR and the PDF to the clinic's own SCP.  The code is
:mod:`services.core.cstore`, shared with the township edge, which stores results at a terminal on
the clinic's LAN the same way."""

from __future__ import annotations

from ...core.cstore import NONE_ACCEPTED, PERMANENT, SUCCESS_OR_WARNING, Outcome, store

__all__ = ["NONE_ACCEPTED", "PERMANENT", "SUCCESS_OR_WARNING", "Outcome", "store"]
