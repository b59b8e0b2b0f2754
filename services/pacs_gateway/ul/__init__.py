"""An asyncio-native DICOM upper layer (PS3.8) for the ingest hot path: C-ECHO and C-STORE.

pynetdicom polls (its DUL and reactor threads loop on ``time.sleep(0.001)``), which caps a
do-nothing SCP at a few hundred C-STOREs a second.  Associations that propose only
Verification and Storage are served here on the gateway's event loop instead; any other
association (query/retrieve, storage commitment, role selection, user identity...) is
handed, bytes and all, to the pynetdicom AE and its plugins (see :mod:`.acceptor`).

* :mod:`.pdu` — PDU framing and the fixed-format PDUs, encoded and decoded by hand
* :mod:`.dimse` — command sets (implicit VR little endian) of C-ECHO and C-STORE
* :mod:`.stream` — a connection as whole PDUs (an asyncio protocol that frames them)
* :mod:`.acceptor` — the server, association negotiation, the C-STORE data path, the hand-off
"""

from .acceptor import NativeServer

__all__ = ["NativeServer"]
