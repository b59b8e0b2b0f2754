"""The DICOM channel: C-STORE the SR and the PDF to the clinic's own SCP (pynetdicom SCU).

pynetdicom calls block, so :func:`store` runs in a worker thread.  Each instance the SCP
accepts is reported to ``stored`` as soon as its Success arrives (the worker records it before
the next instance goes); instances the SCP already accepted (``already_sent``) are not sent
again on a retry.  Either way their SOP Instance UIDs never change, so a repeat is the same
object to the clinic's archive.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from . import Outcome

log = logging.getLogger("yilian.delivery")

# C-STORE statuses (PS3.4 B.2.3): 0x0000 success; 0xB000/0xB007/0xB006 warnings are stored too.
SUCCESS_OR_WARNING = {0x0000, 0xB000, 0xB006, 0xB007}
# Refusals no retry can fix: SOP class not supported, data set does not match the class.
PERMANENT = {0x0122, 0xA900}


def store(datasets: Sequence[Dataset], *, calling_ae: str, called_ae: str, host: str, port: int,
          timeout: float, already_sent: Sequence[str] = (), tls: ssl.SSLContext | None = None,
          stored: Callable[[str], None] = lambda _uid: None) -> Outcome:
    todo = [ds for ds in datasets if ds.SOPInstanceUID not in already_sent]
    if not todo:
        return Outcome(True, "nothing left to send")
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class in sorted({ds.SOPClassUID for ds in todo}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=(tls, None) if tls else None)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "could not connect"
        return Outcome(False, f"association with {called_ae}@{host}:{port} {why}")
    sent: list[str] = []
    try:
        for ds in todo:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                return Outcome(False, f"no C-STORE response from {called_ae} for {ds.SOPInstanceUID} "
                                      "(timeout or connection lost)", sent=tuple(sent))
            if code not in SUCCESS_OR_WARNING:
                return Outcome(False, f"{called_ae} refused {ds.SOPClassUID.name} with status 0x{code:04X}",
                               permanent=code in PERMANENT, sent=tuple(sent))
            sent.append(ds.SOPInstanceUID)
            stored(ds.SOPInstanceUID)
    except (ValueError, RuntimeError) as exc:
        # e.g. no accepted presentation context for the SOP class: the terminal cannot take it
        return Outcome(False, f"{called_ae} cannot take the result: {exc}", permanent=True, sent=tuple(sent))
    finally:
        if assoc.is_established:
            assoc.release()
    return Outcome(True, f"stored {len(sent)} instance(s) at {called_ae}@{host}:{port}", sent=tuple(sent))
