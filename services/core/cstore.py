"""C-STORE a result's SR and PDF to the clinic's own SCP (pynetdicom SCU): the delivery service's
DICOM channel, and the edge's store at the clinic's terminal on its LAN (docs/edge.md).

pynetdicom calls block, so :func:`store` runs in a worker thread.  Each instance the SCP
accepts is reported to ``stored`` as soon as its Success arrives (the worker records it before
the next instance goes); instances the SCP already accepted (``already_sent``) are not sent
again on a retry.  Either way their SOP Instance UIDs never change, so a repeat is the same
object to the clinic's archive.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ

log = logging.getLogger("yilian.delivery")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt to deliver ended (a C-STORE here; the delivery service's channels alike)."""

    ok: bool
    detail: str = ""
    # Retrying cannot help (e.g. the clinic's SCP refuses the SOP class): dead-letter now.
    permanent: bool = False
    sent: tuple[str, ...] = field(default=())  # SOP Instance UIDs stored by this attempt
    # Not done, nothing failed: the result is ready and waits for someone else to take it (the edge).
    waiting: bool = False

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
    peer = _Peer()
    began = time.time()
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=(tls, None) if tls else None,
                         evt_handlers=[(evt.EVT_CONN_OPEN, peer.connected), (evt.EVT_PDU_RECV, peer.pdu)])
    where = f"{called_ae}@{host}:{port}"
    if not assoc.is_established:
        if assoc.is_aborted and not assoc.accepted_contexts and assoc.rejected_contexts:
            return Outcome(False, f"{where} {NONE_ACCEPTED}", permanent=True)  # it cannot take SR or PDF
        return Outcome(False, _not_established(assoc, peer, began, where=where, timeout=timeout, tls=tls is not None))
    sent: list[str] = []
    try:
        for ds in todo:
            began = time.time()
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                return Outcome(False, _no_response(assoc, peer, ds, began, where=where, timeout=timeout),
                               sent=tuple(sent))
            if code not in SUCCESS_OR_WARNING:
                return Outcome(False, f"C-STORE of {ds.SOPClassUID.name} to {where} failed with status 0x{code:04X}",
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


# --- why an association failed ----------------------------------------------------------------
# pynetdicom keeps no reason on the association: the PDUs the peer sent come through events
# bound to this association; a failed TCP or TLS connect only through its log (the DUL thread's
# "TCP Initialisation Error: ..."), which _ConnectErrors keeps by thread for a moment.

NONE_ACCEPTED = "accepted none of the proposed presentation contexts (SOP class / transfer syntax)"


class _Peer:
    """What this association's peer did: connected, rejected (A-ASSOCIATE-RJ), aborted (A-ABORT)."""

    def __init__(self) -> None:
        self.is_connected = False
        self.rejected: A_ASSOCIATE_RJ | None = None
        self.aborted: A_ABORT_RQ | None = None

    def connected(self, event: Any) -> None:
        self.is_connected = True

    def pdu(self, event: Any) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            self.rejected = event.pdu
        elif isinstance(event.pdu, A_ABORT_RQ):
            self.aborted = event.pdu


class _ConnectErrors(logging.Handler):
    """The last connect error pynetdicom logged on each thread (a few hundred at most)."""

    PREFIX = "TCP Initialisation Error: "

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.by_thread: dict[int | None, tuple[float, str]] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.PREFIX):
            with self._guard:
                if len(self.by_thread) > 256:
                    self.by_thread.clear()
                self.by_thread[record.thread] = (record.created, message.removeprefix(self.PREFIX))

    def pop(self, thread: int | None, since: float) -> str | None:
        with self._guard:
            created, message = self.by_thread.pop(thread, (0.0, ""))
        return message if created >= since else None


_connect_errors = _ConnectErrors()
logging.getLogger("pynetdicom.transport").addHandler(_connect_errors)


def _described(pdu: Any, *fields: str) -> str:
    values = []
    for name in fields:
        try:
            values.append(str(getattr(pdu, name)))
        except ValueError:  # a value outside the standard's table
            values.append(f"{name.removesuffix('_str')} {getattr(pdu, name.removesuffix('_str'), '?')}")
    return ", ".join(values)


def _abort(pdu: A_ABORT_RQ) -> str:
    """An A-ABORT's source, and its reason when the provider gave one (a user's abort has none)."""
    if pdu.source == 2:
        return f"A-ABORT from the DUL service-provider: {_described(pdu, 'reason_str')}"
    return f"A-ABORT from the {_described(pdu, 'source_str')}"


def _not_established(assoc: Any, peer: _Peer, began: float, *, where: str, timeout: float, tls: bool) -> str:
    if not peer.is_connected:
        error = _connect_errors.pop(getattr(assoc.dul, "ident", None), began) or "no reason given"
        if "refused" in error.lower():
            return f"connection to {where} refused"
        if "timed out" in error.lower():
            return f"connection to {where} timed out after {timeout:g}s"
        if tls and ("ssl" in error.lower() or "certificate" in error.lower() or "reset" in error.lower()):
            return f"TLS failure with {where}: {error}"
        return f"could not connect to {where}: {error}"
    if peer.rejected is not None:
        return f"association rejected by {where}: " + _described(peer.rejected, "result_str", "source_str",
                                                                  "reason_str")
    if peer.aborted is not None:
        return f"association aborted by {where} ({_abort(peer.aborted)})"
    if time.time() - began >= timeout:
        return f"no answer from {where} to the association request within {timeout:g}s"
    return f"connection closed by {where} during association negotiation"


def _no_response(assoc: Any, peer: _Peer, ds: Dataset, began: float, *, where: str, timeout: float) -> str:
    what = f"the C-STORE of {ds.SOPClassUID.name} {ds.SOPInstanceUID}"
    if peer.aborted is not None:
        return f"association aborted by {where} during {what} ({_abort(peer.aborted)})"
    if time.time() - began >= timeout:  # pynetdicom aborts the association itself then
        return f"no response from {where} to {what} within {timeout:g}s"
    return f"connection to {where} lost during {what}"
