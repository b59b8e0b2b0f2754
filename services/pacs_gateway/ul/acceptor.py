"""The DICOM port on asyncio: accept associations, serve C-ECHO/C-STORE, hand the rest to pynetdicom.

One coroutine per association.  After the A-ASSOCIATE-RQ (PS3.8 9.3.2) is read:

* rejected (A-ASSOCIATE-RJ) for an unknown called or calling AE title, or too many
  associations — in all (as the pynetdicom AE), or from one calling AE title or one peer
  address (rejected-transient, local-limit-exceeded);
* served natively when every proposed abstract syntax is Verification or Storage and no
  extended negotiation is asked for: data set fragments stream into a staging file (and a
  running sha256), then :class:`~..ingest.Ingest` prepares and commits the instance and
  the C-STORE-RSP goes out only once it is durable;
* otherwise handed off: the request bytes and everything after them are relayed through a
  socket pair to the pynetdicom AE (query/retrieve/commitment plugins), on its own thread,
  with the client's real address.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC as AssociateAC
from pynetdicom.pdu import A_ASSOCIATE_RQ as AssociateRQ
from pynetdicom.pdu_primitives import (A_ASSOCIATE, AsynchronousOperationsWindowNegotiation,
                                       ImplementationClassUIDNotification, ImplementationVersionNameNotification,
                                       MaximumLengthNotification)
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext, negotiate_as_acceptor

from ...core.instruments import DIMSE_COMMANDS, count_dimse_response, dimse_counter
from .. import statuses
from ..ingest import Ingest, Received
from ..model import StoreRefused
from . import dimse, pdu
from .pdu import ProtocolError
from .stream import PDUStream

if TYPE_CHECKING:
    from ..service import GatewayService

log = logging.getLogger("yilian.pacs_gateway.ul")

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
NATIVE_ABSTRACT_SYNTAXES = frozenset([dimse.VERIFICATION] + [str(cx.abstract_syntax)
                                                            for cx in AllStoragePresentationContexts])
# User information items we answer ourselves; anything else goes to pynetdicom.
NATIVE_USER_ITEMS = (MaximumLengthNotification, ImplementationClassUIDNotification,
                     ImplementationVersionNameNotification, AsynchronousOperationsWindowNegotiation)
MAX_ASSOCIATE_RQ = 1 << 20  # an A-ASSOCIATE-RQ is a few kB; refuse absurd ones before reading them
MAX_PDU_ACCEPTED = 64 << 20  # a P-DATA-TF larger than this is a broken peer, not a big instance
AE_TITLES = 10  # offset of the Called and Calling AE Title fields (16 bytes each) in A-ASSOCIATE-RQ/AC
PROPOSALS_KEPT = 64  # distinct A-ASSOCIATE-RQs remembered (a few kB each): one or two per modality
REJECTED_LINGER = 2.0  # after an A-ASSOCIATE-RJ, seconds the requestor has to close the connection
C_STORE = DIMSE_COMMANDS[dimse.C_STORE_RSP]


class _Incoming:
    """A C-STORE data set on its way in: held in memory up to ``inline`` bytes, then spooled to a file."""

    __slots__ = ("command", "context_id", "file", "file_meta", "fragments", "inline", "limit", "looked_up", "path",
                 "sha256", "size", "spool", "transfer_syntax")

    def __init__(self, command: dimse.Command, context_id: int, transfer_syntax: str, file_meta: bytes, limit: int,
                 inline: int, spool: Any) -> None:
        self.command = command
        self.context_id = context_id
        self.transfer_syntax = transfer_syntax
        self.file_meta = file_meta
        self.limit = limit
        self.inline = inline
        self.spool = spool  # () -> (path, file): opens the staging file when the data set outgrows ``inline``
        self.fragments: list[memoryview] = []
        self.path: Path | None = None
        self.file: BinaryIO | None = None
        self.sha256 = hashlib.sha256(file_meta)
        self.size = len(file_meta)
        self.looked_up: asyncio.Future[Any] | None = None  # the index entry of this SOP Instance UID, being read

    def write(self, data: memoryview) -> None:
        self.size += len(data)
        if self.size > self.limit:  # past the limit: count, keep nothing, refuse at the end
            return
        self.sha256.update(data)
        if self.file is not None:
            self.file.write(data)
        elif self.size <= self.inline:
            self.fragments.append(data)
        else:  # a large instance: from now on it streams to a staging file
            self.path, self.file = self.spool()
            self.file.writelines([self.file_meta, *self.fragments, data])
            self.fragments = []

    def sync_and_close(self, fsync: bool) -> None:
        if self.file is None:
            return
        try:
            if fsync:
                os.fsync(self.file.fileno())
        finally:
            self.file.close()

    def discard(self) -> None:
        self.fragments = []
        if self.looked_up is not None:
            self.looked_up.cancel()
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass(slots=True)
class _Proposal:
    """What an A-ASSOCIATE-RQ's items (all but its AE titles) negotiate to: the A-ASSOCIATE-AC when
    served natively (``None``: handed off).  A modality proposes the same items every time (so do
    all the modalities of one make), and decoding and negotiating ~100 presentation contexts with
    pynetdicom costs ~10 ms."""

    abstract_syntaxes: list[str]
    accepted: dict[int, tuple[str, str]] = field(default_factory=dict)
    peer_max_pdu: int = 0
    ac: bytes | None = None


def _plain_ae_titles(raw: bytes) -> tuple[str, str] | None:
    """(called, calling) from an A-ASSOCIATE-RQ when both are plainly valid AE titles (PS3.5 AE: no
    control characters or backslash, not all spaces); ``None`` leaves the decision to pynetdicom."""
    titles = []
    for value in (raw[AE_TITLES:AE_TITLES + 16], raw[AE_TITLES + 16:AE_TITLES + 32]):
        title = value.strip(b" ")
        if not title or len(value) != 16 or any(c < 0x20 or c > 0x7E or c == 0x5C for c in title):
            return None
        titles.append(title.decode("ascii"))
    return titles[0], titles[1]


class _Association:
    def __init__(self, server: NativeServer, stream: PDUStream, peer: str, calling: str,
                 accepted: dict[int, tuple[str, str]], peer_max_pdu: int) -> None:
        self.server = server
        self.stream = stream
        self.peer, self.calling = peer, calling
        self.accepted = accepted
        self.peer_max_pdu = peer_max_pdu
        self.command = bytearray()
        self.incoming: _Incoming | None = None
        self.stored = 0

    async def serve(self) -> None:
        stream = self.stream
        stream.idle_timeout = self.server.timeout  # only while waiting: our own work is not the peer's idleness
        try:
            while True:
                for pdu_type, body in await stream.receive():
                    if pdu_type == pdu.P_DATA_TF:
                        await self.p_data(body)
                    elif pdu_type == pdu.A_RELEASE_RQ:
                        if self.incoming is not None:
                            raise ProtocolError("A-RELEASE-RQ in the middle of a C-STORE", pdu.REASON_UNEXPECTED_PDU)
                        stream.write(pdu.a_release_rp())
                        await stream.drain()
                        log.debug("association released", extra={"peer": self.peer, "calling_ae": self.calling,
                                                                  "stored": self.stored})
                        return
                    elif pdu_type == pdu.A_ABORT:
                        log.info("association aborted by the peer",
                                 extra={"peer": self.peer, "calling_ae": self.calling})
                        return
                    else:
                        raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X}", pdu.REASON_UNEXPECTED_PDU)
        finally:
            if self.incoming is not None:
                self.incoming.discard()
                self.incoming = None

    async def p_data(self, body: bytes | memoryview) -> None:
        for context_id, control, data in pdu.pdvs(body):
            if context_id not in self.accepted:
                raise ProtocolError(f"PDV on presentation context {context_id}, which was not accepted")
            if control & pdu.COMMAND:
                if self.incoming is not None:
                    raise ProtocolError("command fragment before the data set ended", pdu.REASON_UNEXPECTED_PDU)
                self.command += data
                if control & pdu.LAST:
                    raw, self.command = bytes(self.command), bytearray()
                    await self.on_command(context_id, raw)
            else:
                incoming = self.incoming
                if incoming is None or incoming.context_id != context_id:
                    raise ProtocolError("data set fragment without its C-STORE-RQ", pdu.REASON_UNEXPECTED_PDU)
                incoming.write(data)
                if control & pdu.LAST:
                    self.incoming = None
                    if incoming.file is not None:
                        incoming.file.flush()  # the file is whole before anyone reads or stats it
                    await self.on_data_set(incoming)

    async def on_command(self, context_id: int, raw: bytes) -> None:
        try:
            command = dimse.decode(raw)
        except dimse.BadCommand as exc:
            raise ProtocolError(f"undecodable command set: {exc}") from None
        if command.field == dimse.C_ECHO_RQ and not command.has_data_set:
            self.respond(context_id, dimse.response(dimse.C_ECHO_RSP, responding_to=command.message_id,
                                                    sop_class_uid=dimse.VERIFICATION))
            count_dimse_response(self.server.gateway.rt, dimse.C_ECHO_RSP, statuses.SUCCESS)  # /metrics
            await self.stream.drain()
        elif command.field == dimse.C_STORE_RQ and command.has_data_set:
            self.incoming = self.server.open_staging(command, context_id, self.accepted[context_id][1])
            self.incoming.looked_up = self.server.ingest.lookup(command.sop_instance_uid)
        else:
            raise ProtocolError(f"DIMSE command 0x{command.field:04X} not supported on a storage association",
                                pdu.REASON_UNEXPECTED_PDU_PARAMETER)

    async def on_data_set(self, incoming: _Incoming) -> None:
        command = incoming.command
        status, comment = await self.server.store(self, incoming)
        self.respond(incoming.context_id, dimse.response(
            dimse.C_STORE_RSP, responding_to=command.message_id, sop_class_uid=command.sop_class_uid,
            sop_instance_uid=command.sop_instance_uid, status=status, comment=comment))
        self.server.responses.inc(command=C_STORE, status=f"0x{status:04X}")  # /metrics (a final status)
        await self.stream.drain()

    def respond(self, context_id: int, command: bytes) -> None:
        self.stream.write(pdu.p_data_tf(context_id, command, command=True, max_pdu=self.peer_max_pdu))


def _decrement(counter: collections.Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class NativeServer:
    """The gateway's DICOM port: an asyncio server; pynetdicom serves what it hands off."""

    def __init__(self, gateway: GatewayService, ingest: Ingest, *, contexts: list[PresentationContext],
                 hand_off: Any, ssl_context: ssl.SSLContext | None, timeout: float,
                 max_associations: int, max_pdu: int, max_per_ae: int | None = None,
                 max_per_peer: int | None = None) -> None:
        self.gateway, self.ingest = gateway, ingest
        self.contexts = contexts
        self.hand_off_server = hand_off  # a pynetdicom ThreadedAssociationServer that never listens
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.max_associations = max_associations
        self.max_per_ae = max_per_ae or max_associations
        self.max_per_peer = max_per_peer or max_associations
        self.max_pdu = max_pdu
        self.active = 0  # connections holding a slot (the total limit counts these)
        # Associations accepted and not ended (native or handed off) by calling AE title, and
        # connections by peer host from the moment they are accepted (an idle connection holds a
        # slot too): neither may hold more than its share of this process's slots.
        self.by_calling: collections.Counter[str] = collections.Counter()
        self.by_host: collections.Counter[str] = collections.Counter()
        # Only a blob store that fsyncs its files wants the early fsync (GridFS copies the file).
        self.fsync = bool(getattr(gateway.rt.blobs, "fsync", False))
        self.responses = dimse_counter(gateway.rt)  # looked up once, counted per C-STORE
        self._proposals: dict[bytes, _Proposal] = {}  # A-ASSOCIATE-RQ bytes but the AE titles -> negotiation
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int) -> int:
        # asyncio sets TCP_NODELAY on TCP connections itself; reuse_port lets worker processes share the port.
        tls: dict[str, Any] = {"ssl": self.ssl_context, "ssl_handshake_timeout": self.timeout} if self.ssl_context else {}
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: PDUStream(self._connection, first_limit=MAX_ASSOCIATE_RQ, high_water=2 * self.max_pdu),
            host, port, reuse_port=True, backlog=256, **tls)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    # --- one connection ----------------------------------------------------------------
    async def _connection(self, stream: PDUStream) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        address = stream.peername() or ("?", 0)
        peer, host = f"{address[0]}:{address[1]}", str(address[0])
        # Past its host's share a connection gets no slot: it cannot crowd others out while it
        # idles, and its A-ASSOCIATE-RQ is rejected.
        over_share = self.by_host[host] >= self.max_per_peer
        self.by_host[host] += 1
        self.active += 0 if over_share else 1
        handed_off = established = False
        calling: str | None = None  # counted under it once its association is accepted
        try:
            async with asyncio.timeout(self.timeout) as deadline:  # ARTIM: the A-ASSOCIATE-RQ must come
                try:
                    [(pdu_type, body)] = await stream.receive()  # the first PDU alone: the rest is held
                    if pdu_type != pdu.A_ASSOCIATE_RQ:
                        raise ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02X}",
                                            pdu.REASON_UNEXPECTED_PDU)
                    request = pdu.HEADER.pack(pdu_type, len(body)) + bytes(body)
                    accepted = await self._associate(stream, peer, request, host, over_share)
                    if accepted is None:
                        return
                    association, calling = accepted
                    deadline.reschedule(None)  # from here the stream's idle timeout, or pynetdicom's
                    if association == "handed off":
                        handed_off = True
                        await self._relay(stream, request, address, peer)
                        return
                    established = True
                    await association.serve()
                except ProtocolError as exc:
                    log.warning("association aborted: protocol error",
                                extra={"peer": peer, "error": str(exc), "reason": exc.reason})
                    stream.write(pdu.a_abort(pdu.ABORT_SOURCE_PROVIDER, exc.reason))
        except TimeoutError:
            log.info("association closed: peer silent for too long", extra={"peer": peer, "timeout": self.timeout})
            if established:  # ARTIM expiry before an association just closes the connection (PS3.8 AA-2)
                with contextlib.suppress(Exception):
                    stream.write(pdu.a_abort(pdu.ABORT_SOURCE_PROVIDER, pdu.REASON_NOT_SPECIFIED))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as exc:
            log.info("association connection lost", extra={"peer": peer, "error": repr(exc)})
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                stream.write(pdu.a_abort(pdu.ABORT_SOURCE_PROVIDER, pdu.REASON_NOT_SPECIFIED))
            raise
        except Exception:
            log.exception("association failed", extra={"peer": peer})
            with contextlib.suppress(Exception):
                stream.write(pdu.a_abort(pdu.ABORT_SOURCE_PROVIDER, pdu.REASON_NOT_SPECIFIED))
        finally:
            self.active -= 0 if over_share else 1
            _decrement(self.by_host, host)
            if calling is not None:
                _decrement(self.by_calling, calling)
            self._tasks.discard(task)
            if not handed_off:
                with contextlib.suppress(Exception):
                    await stream.close()

    async def _associate(self, stream: PDUStream, peer: str, raw: bytes, host: str,
                         over_share: bool) -> tuple[_Association | str, str] | None:
        """Answer the A-ASSOCIATE-RQ: ``None`` when rejected, else the association (or "handed
        off") and the calling AE title it is counted under until it ends."""
        key = raw[:AE_TITLES] + raw[AE_TITLES + 32:]
        titles = _plain_ae_titles(raw)
        proposal = self._proposals.get(key) if titles is not None else None
        if proposal is None:
            proposal, titles = self._negotiate(raw)
            if len(self._proposals) >= PROPOSALS_KEPT:
                del self._proposals[next(iter(self._proposals))]  # the oldest
            self._proposals[key] = proposal
        called, calling = titles
        reject: tuple[int, int, int] | None = None
        reason = ""
        from ..scp import REJECT_CALLED_AE, REJECT_CALLING_AE, registered_aes
        if calling not in registered_aes(self.gateway):
            reject, reason = pdu.RJ_CALLING_AE, REJECT_CALLING_AE
        if called != self.gateway.rt.settings.ae_title.strip():
            reject, reason = pdu.RJ_CALLED_AE, REJECT_CALLED_AE
        pynetdicom_active = len(self.gateway.ae.active_associations) if self.gateway.ae is not None else 0
        if reject is None and over_share:
            reject, reason = pdu.RJ_LOCAL_LIMIT, "too many associations from this peer address"
        elif reject is None and self.active + pynetdicom_active > self.max_associations:
            reject, reason = pdu.RJ_LOCAL_LIMIT, "too many associations"
        elif reject is None and self.by_calling[calling] >= self.max_per_ae:
            reject, reason = pdu.RJ_LOCAL_LIMIT, "too many associations from this calling AE title"
        if reject is not None:
            log.warning("association rejected", extra={
                "reason": reason, "calling_ae": calling, "called_ae": called, "peer": peer,
                "associations": self.active, "associations_of_calling_ae": self.by_calling[calling],
                "connections_of_peer": self.by_host[host]})
            stream.write(pdu.a_associate_rj(*reject))
            await stream.drain()
            # PS3.8 Sta13: the requestor closes the connection once it has the RJ (ARTIM bounds the
            # wait); closing first races its reading of the RJ, which it may then take for an abort.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REJECTED_LINGER):
                    while await stream.receive():
                        pass
            return None
        self.by_calling[calling] += 1  # counted at once after the check: no other RQ is decided in between
        try:
            return await self._accept(stream, peer, proposal, called, calling), calling
        except BaseException:
            _decrement(self.by_calling, calling)
            raise

    async def _accept(self, stream: PDUStream, peer: str, proposal: _Proposal, called: str,
                      calling: str) -> _Association | str:

        if proposal.ac is None:
            log.debug("association handed to pynetdicom", extra={"path": "pynetdicom", "peer": peer,
                                                                 "calling_ae": calling,
                                                                 "abstract_syntaxes": proposal.abstract_syntaxes})
            return "handed off"
        # The AC's reserved AE title fields repeat the request's (PS3.8 9.3.3), as pynetdicom encodes them.
        stream.write(proposal.ac[:AE_TITLES] + called.encode("ascii").ljust(16) + calling.encode("ascii").ljust(16)
                     + proposal.ac[AE_TITLES + 32:])
        stream.read_pdus(MAX_PDU_ACCEPTED)
        await stream.drain()
        log.debug("association accepted", extra={"path": "native", "peer": peer, "calling_ae": calling,
                                                 "accepted_contexts": len(proposal.accepted),
                                                 "peer_max_pdu": proposal.peer_max_pdu})
        return _Association(self, stream, peer, calling, proposal.accepted, proposal.peer_max_pdu)

    def _negotiate(self, raw: bytes) -> tuple[_Proposal, tuple[str, str]]:
        rq = AssociateRQ()
        try:
            rq.decode(raw)
            primitive = rq.to_primitive()
        except Exception as exc:
            raise ProtocolError(f"undecodable A-ASSOCIATE-RQ: {exc}", pdu.REASON_INVALID_PDU_PARAMETER_VALUE) from None
        proposed = primitive.presentation_context_definition_list
        items = primitive.user_information
        proposal = _Proposal(abstract_syntaxes=sorted({str(cx.abstract_syntax) for cx in proposed}))
        native = (all(str(cx.abstract_syntax) in NATIVE_ABSTRACT_SYNTAXES for cx in proposed)
                  and all(isinstance(item, NATIVE_USER_ITEMS) for item in items))
        if native:
            results, _ = negotiate_as_acceptor(proposed, self.contexts, None)
            proposal.accepted = {int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                                 for cx in results if cx.result == 0x00}
            proposal.peer_max_pdu = next((item.maximum_length_received for item in items
                                          if isinstance(item, MaximumLengthNotification)), 0) or 0
            proposal.ac = self._associate_ac(primitive, results)
        return proposal, ((primitive.called_ae_title or "").strip(), (primitive.calling_ae_title or "").strip())

    def _associate_ac(self, rq: A_ASSOCIATE, results: list[PresentationContext]) -> bytes:
        ac = A_ASSOCIATE()
        ac.application_context_name = APPLICATION_CONTEXT_NAME
        ac.calling_ae_title = rq.calling_ae_title
        ac.called_ae_title = rq.called_ae_title
        ac.result = 0x00
        ac.result_source = 0x01
        ac.presentation_context_definition_results_list = results
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = self.max_pdu
        class_uid = ImplementationClassUIDNotification()
        class_uid.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        user_information: list[Any] = [max_length, class_uid, version]
        if any(isinstance(item, AsynchronousOperationsWindowNegotiation) for item in rq.user_information):
            window = AsynchronousOperationsWindowNegotiation()  # we perform and invoke one at a time
            window.maximum_number_operations_invoked = 1
            window.maximum_number_operations_performed = 1
            user_information.append(window)
        ac.user_information = user_information
        encoded = AssociateAC()
        encoded.from_primitive(ac)
        return encoded.encode()

    # --- C-STORE ---------------------------------------------------------------------------
    def open_staging(self, command: dimse.Command, context_id: int, transfer_syntax: str) -> _Incoming:
        # The same Part 10 file pynetdicom writes: preamble, DICM, File Meta Information, data set.
        meta = dimse.file_meta(
            sop_class_uid=command.sop_class_uid, sop_instance_uid=command.sop_instance_uid,
            transfer_syntax_uid=transfer_syntax, implementation_class_uid=PYNETDICOM_IMPLEMENTATION_UID,
            implementation_version_name=PYNETDICOM_IMPLEMENTATION_VERSION)
        return _Incoming(command, context_id, transfer_syntax, meta, self.gateway.rt.settings.max_instance_bytes,
                         self.gateway.rt.settings.gateway_inline_bytes, self._spool)

    def _spool(self) -> tuple[Path, BinaryIO]:
        staging = self.gateway.rt.blobs.staging_dir()
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=staging if staging.is_dir() else None)
        return Path(name), os.fdopen(fd, "wb", buffering=1 << 16)

    async def store(self, association: _Association, incoming: _Incoming) -> tuple[int, str]:
        command, calling = incoming.command, association.calling

        def extra(**more: Any) -> dict[str, Any]:  # built only when something is logged
            return {"calling_ae": calling, "sop_instance_uid": command.sop_instance_uid, "peer": association.peer,
                    **more}
        try:
            org = self.gateway.sender(calling)
            if incoming.size > incoming.limit:
                raise StoreRefused(statuses.OUT_OF_RESOURCES,
                                   f"instance of {incoming.size} bytes exceeds limit {incoming.limit}")
            received = Received(calling_ae=calling, organization=org.id, sop_class_uid=command.sop_class_uid,
                                sop_instance_uid=command.sop_instance_uid, transfer_syntax_uid=incoming.transfer_syntax,
                                path=incoming.path, file_meta=incoming.file_meta if incoming.path is None else b"",
                                data_set=tuple(incoming.fragments), sha256=incoming.sha256.hexdigest())
            if incoming.file is not None:
                # The file's fsync runs on a thread while the header is read here.
                synced = asyncio.ensure_future(asyncio.to_thread(incoming.sync_and_close, self.fsync))
                try:
                    prepared = self.ingest.prepare(received)  # header only, file in page cache
                finally:
                    await synced
            else:
                prepared = self.ingest.prepare(received)  # in memory: tens of microseconds
            outcome = await self.ingest.commit(prepared, incoming.looked_up)
        except StoreRefused as refused:
            log.warning("C-STORE refused", extra=extra(status=f"0x{refused.status:04X}", reason=refused.comment))
            self.gateway.refused(calling, command.sop_instance_uid, refused, association.peer)
            return refused.status, refused.comment
        except Exception as exc:  # the store or blob store failed: nothing kept, the sender may retry
            log.exception("C-STORE failed", extra=extra())
            return statuses.PROCESSING_FAILURE, f"processing failure: {type(exc).__name__}"
        finally:
            incoming.fragments = []
            if incoming.looked_up is not None:  # refused before it was needed: stop it, or read its error
                if not incoming.looked_up.done():
                    incoming.looked_up.cancel()
                elif not incoming.looked_up.cancelled():
                    incoming.looked_up.exception()
            if incoming.file is not None:
                with contextlib.suppress(OSError):
                    incoming.file.close()
            if incoming.path is not None:
                incoming.path.unlink(missing_ok=True)  # kept files were renamed away; the rest goes
        association.stored += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("C-STORE", extra=extra(result=outcome.result, path="native"))
        return outcome.status, outcome.comment

    # --- hand-off to pynetdicom -------------------------------------------------------------
    async def _relay(self, stream: PDUStream, request: bytes, address: Any, peer: str) -> None:
        ours, theirs = socket.socketpair()
        try:
            # pynetdicom reads the A-ASSOCIATE-RQ again from its end and runs the association on a thread.
            self.hand_off_server.process_request(theirs, (str(address[0]), int(address[1])))
        except Exception:
            ours.close()
            theirs.close()
            raise
        inner_reader, inner_writer = await asyncio.open_connection(sock=ours)
        inner_writer.write(request)
        stream.relay()

        async def inbound() -> None:  # the peer's bytes to pynetdicom
            try:
                while True:
                    for chunk in await stream.receive():
                        inner_writer.write(chunk)
                    await inner_writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    inner_writer.close()

        async def outbound() -> None:  # pynetdicom's answers to the peer
            try:
                while data := await inner_reader.read(1 << 16):
                    stream.write(data)
                    await stream.drain()
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await stream.close()

        try:
            await asyncio.gather(inbound(), outbound())
        finally:
            with contextlib.suppress(Exception):
                inner_writer.close()
                await stream.close()
            log.debug("handed-off association ended", extra={"peer": peer})
