"""The DICOM node: a pynetdicom AE answering C-ECHO and C-STORE, and who may associate.

Handlers here are thin: they run on pynetdicom's association threads, turn the DIMSE
request into an :class:`~.ingest.Received`, validate it on that thread and hand the
store work to the gateway's event loop.  Query/retrieve/commitment handlers plug in
through the gateway's ``install`` hook (see ``service.py``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, dimse_messages, evt
from pynetdicom.presentation import AllStoragePresentationContexts, build_context
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from . import statuses
from .ingest import Ingest, Received
from .model import StoreRefused

if TYPE_CHECKING:
    from .service import GatewayService

log = logging.getLogger("yilian.pacs_gateway.scp")

# Accepted and stored as received, bit for bit (nothing is transcoded).  pynetdicom accepts
# the first of these the requestor proposes in a context, so the compressed syntaxes come
# first: a modality that offers its native JPEG never has to decompress for us.
COMPRESSED_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component Lossless
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.201",  # High-Throughput JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.202",  # High-Throughput JPEG 2000 RPCL Lossless
    "1.2.840.10008.1.2.4.203",  # High-Throughput JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]
UNCOMPRESSED_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian (the default every SCP must accept)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
]
TRANSFER_SYNTAXES = COMPRESSED_TRANSFER_SYNTAXES + UNCOMPRESSED_TRANSFER_SYNTAXES

# A-ASSOCIATE-RJ diagnostics (PS3.8 9.3.4), source 1 = DICOM UL service-user, result 1 = permanent.
REJECT_CALLING_AE = "calling AE title not recognised"
REJECT_CALLED_AE = "called AE title not recognised"

CALLING_AE_NOT_REGISTERED = 0xC212  # the consortium dropped the AE during the association

# pynetdicom streams each C-STORE data set to a NamedTemporaryFile.  Putting it in the blob
# store's staging directory makes keeping it a rename on the same filesystem, not a copy.
_staging: Path | None = None
_NamedTemporaryFile = tempfile.NamedTemporaryFile


def _staged_temporary_file(*args: Any, **kwargs: Any) -> Any:
    if _staging is not None and _staging.is_dir():  # a stopped gateway's directory may be gone
        kwargs.setdefault("dir", _staging)
    return _NamedTemporaryFile(*args, **kwargs)


def receive_into(staging: Path) -> None:
    """Receive C-STORE data sets as files in ``staging`` (process-wide pynetdicom setting)."""
    global _staging
    _staging = staging
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = _staged_temporary_file  # type: ignore[attr-defined]


class ReusePortServer(ThreadedAssociationServer):
    """Several gateway processes listen on one port; the kernel spreads associations over them."""

    def server_bind(self) -> None:
        if hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        # pynetdicom does the TLS handshake here, on the one accepting thread, where a client
        # that stalls would hold up every other connection.  Defer it: OpenSSL completes it on
        # the association's own thread at its first read.
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address


class HandOffServer(ThreadedAssociationServer):
    """pynetdicom's association machinery without a listening socket of its own.

    The native upper layer (``ul/``) owns the port and hands this server the associations it
    does not serve itself (``process_request(socket, client_address)``); each runs on its own
    thread as if pynetdicom had accepted it.
    """

    def server_bind(self) -> None:  # never listens: the native server does
        pass

    def server_activate(self) -> None:
        pass


class GatewayAE(AE):
    """An AE whose accepted calling AE titles are read from the consortium at each association."""

    def __init__(self, ae_title: str, registered: Callable[[], list[str]]) -> None:
        super().__init__(ae_title=ae_title)
        self._registered = registered

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        # pynetdicom reads this once per A-ASSOCIATE-RQ; an empty list would accept anyone.
        return self._registered() or ["\x00"]

    @require_calling_aet.setter
    def require_calling_aet(self, values: list[str]) -> None:
        raise AttributeError("calling AE titles come from the consortium")


def registered_aes(gateway: GatewayService) -> list[str]:
    titles: list[str] = []
    for org in gateway.rt.consortium.organizations.values():
        titles.extend(org.modality_aes)
        titles.extend(org.workstation_aes)
    return titles


def build_ae(gateway: GatewayService) -> GatewayAE:
    settings = gateway.rt.settings
    ae = GatewayAE(settings.ae_title, lambda: registered_aes(gateway))
    ae.require_called_aet = True
    ae.maximum_associations = settings.dicom_max_associations
    ae.maximum_pdu_size = 1 << 20  # fewer, larger PDUs: less per-message Python work
    ae.add_supported_context(Verification, UNCOMPRESSED_TRANSFER_SYNTAXES[:2])
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
    return ae


def server_ssl_context(cert: str | None, key: str | None, ca: str | None) -> ssl.SSLContext | None:
    """DICOM TLS (PS3.15 B.1) when a certificate and key are configured; a CA makes client certs mandatory."""
    if not cert or not key:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca:
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _status(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


class StorageSCP:
    """The C-ECHO and C-STORE handlers, plus logging of rejected associations."""

    def __init__(self, gateway: GatewayService, ingest: Ingest, *, commit_timeout: float = 600.0) -> None:
        self.gateway = gateway
        self.ingest = ingest
        self.commit_timeout = commit_timeout

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        return [(evt.EVT_C_ECHO, self.on_c_echo), (evt.EVT_C_STORE, self.on_c_store),
                (evt.EVT_REJECTED, self.on_rejected)]

    def on_c_echo(self, event: Any) -> int:
        return statuses.SUCCESS

    def on_rejected(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor
        called = (rq.primitive.called_ae_title if rq.primitive is not None else "").strip()
        calling = (rq.ae_title or "").strip()
        if called != assoc.acceptor.ae_title.strip():
            reason = REJECT_CALLED_AE
        elif self.gateway.organization_for(calling) is None:
            reason = REJECT_CALLING_AE
        else:
            reason = "rejected by the DICOM upper layer"
        log.warning("association rejected", extra={"reason": reason, "calling_ae": calling, "called_ae": called,
                                                   "peer": f"{rq.address}:{rq.port}"})

    def on_c_store(self, event: Any) -> int | Dataset:
        req = event.request
        calling = event.assoc.requestor.ae_title.strip()
        sop_uid = str(req.AffectedSOPInstanceUID or "")
        path = Path(event.dataset_path)
        extra = {"calling_ae": calling, "sop_instance_uid": sop_uid,
                 "peer": f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"}
        try:
            org = self.gateway.sender(calling)
            received = Received(path=path, calling_ae=calling, organization=org.id,
                                sop_class_uid=str(req.AffectedSOPClassUID or ""), sop_instance_uid=sop_uid,
                                transfer_syntax_uid=str(event.context.transfer_syntax))
            prepared = self.ingest.prepare(received)
            outcome = self.gateway.call(self.ingest.commit(prepared), timeout=self.commit_timeout)
        except StoreRefused as refused:
            log.warning("C-STORE refused", extra={**extra, "status": f"0x{refused.status:04X}",
                                                  "reason": refused.comment})
            self.gateway.refused(calling, sop_uid, refused, extra["peer"])
            return _status(refused.status, refused.comment)
        except Exception as exc:  # the store or blob store failed: nothing kept, the sender may retry
            log.exception("C-STORE failed", extra=extra)
            return _status(statuses.PROCESSING_FAILURE, f"processing failure: {type(exc).__name__}")
        finally:
            path.unlink(missing_ok=True)  # kept files were renamed away; the rest goes
        log.debug("C-STORE", extra={**extra, "result": outcome.result})
        return outcome.status
