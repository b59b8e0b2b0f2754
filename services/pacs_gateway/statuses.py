"""C-STORE response statuses the gateway returns (PS3.4 Annex B.2.3, PS3.7 Annex C).

Named so a handler reads like the standard.  Every failure goes back with an Error
Comment (0000,0902) that says why, in words a PACS administrator can act on.
"""

from __future__ import annotations

SUCCESS = 0x0000
# Failure: Refused: Out of Resources (instance too large, disk full).
OUT_OF_RESOURCES = 0xA700
# Failure: Error: Data Set does not match SOP Class (also: identifiers disagree).
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
# Failure: Error: Cannot understand (0xC000 family; the low byte is ours).
CANNOT_UNDERSTAND_UNPARSABLE = 0xC210
CANNOT_UNDERSTAND_BAD_UID = 0xC211
# Failure: Refused: Not authorized (PS3.7 C.5): the sender may not store this instance here (a study
# another organisation owns, or a workstation's AE title); retrying cannot help.
NOT_AUTHORIZED = 0x0124
# Failure: Processing failure (the store or blob store is unavailable; the sender may retry).
PROCESSING_FAILURE = 0x0110
