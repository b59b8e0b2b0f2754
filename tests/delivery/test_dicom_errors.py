"""A failed DICOM delivery says what happened (the delivery's ``last_error``), against real peers:
nothing listening, a port that never accepts, TLS to a plain SCP, DCMTK ``storescp --refuse`` and
``--abort-after``, a peer that hangs up or never answers, and pynetdicom SCPs that answer a failure
status or support none of the classes."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading

import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from services.delivery.channels import dicom

from ..dicom_samples import make_study
from ..support import free_port, wait_for_sync
from .conftest import STORESCP


@pytest.fixture
def datasets(tmp_path):
    return [dcmread(f) for f in make_study(tmp_path / "study", series=1, instances=1).files]


def _store(datasets, port: int, **kw) -> dicom.Outcome:
    return dicom.store(datasets, calling_ae="YILIAN", called_ae="CG_TERM", host="127.0.0.1", port=port,
                       timeout=kw.pop("timeout", 3.0), **kw)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def storescp(tmp_path):
    procs = []

    def start(*options: str) -> int:
        port = free_port()
        procs.append(subprocess.Popen([STORESCP, "-aet", "CG_TERM", *options, "-od", str(tmp_path), str(port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_sync(lambda: _listening(port), timeout=10, what="storescp listening")
        return port
    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def test_nothing_listening_is_connection_refused(datasets):
    port = free_port()
    outcome = _store(datasets, port)
    assert not outcome.ok and outcome.detail == f"connection to CG_TERM@127.0.0.1:{port} refused"


def test_a_port_that_never_accepts_is_a_connection_timeout(datasets):
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)  # the accept queue fills; further SYNs are dropped
        port = full.getsockname()[1]
        queued = []
        try:
            for _ in range(4):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
                queued.append(c)
            outcome = _store(datasets, port, timeout=1.0)
        finally:
            for c in queued:
                c.close()
    assert not outcome.ok and outcome.detail == f"connection to CG_TERM@127.0.0.1:{port} timed out after 1s"


def test_tls_to_a_plain_scp_is_a_tls_failure(datasets, storescp):
    port = storescp()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    outcome = _store(datasets, port, tls=context)
    assert not outcome.ok and outcome.detail.startswith(f"TLS failure with CG_TERM@127.0.0.1:{port}: "), outcome.detail


def test_an_scp_refusing_the_association_is_rejected_with_its_reason(datasets, storescp):
    port = storescp("--refuse")
    outcome = _store(datasets, port)
    assert not outcome.ok and outcome.detail.startswith(f"association rejected by CG_TERM@127.0.0.1:{port}: "
                                                        "Rejected (Permanent), DUL service-user"), outcome.detail


def test_an_scp_aborting_during_the_c_store_is_aborted(datasets, storescp):
    port = storescp("--abort-after")
    outcome = _store(datasets, port)
    assert not outcome.ok and outcome.detail.startswith(f"association aborted by CG_TERM@127.0.0.1:{port} during "
                                                        "the C-STORE of CT Image Storage"), outcome.detail
    assert outcome.detail.endswith("(A-ABORT from the DUL service-user)")


def test_a_peer_hanging_up_before_answering_the_association_request(datasets):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def hang_up() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.close()
        threading.Thread(target=hang_up, daemon=True).start()
        outcome = _store(datasets, port)
    assert not outcome.ok
    assert outcome.detail == f"connection closed by CG_TERM@127.0.0.1:{port} during association negotiation"


def test_an_scp_answering_a_failure_status_says_the_status(datasets):
    scp = AE(ae_title="CG_TERM")
    scp.add_supported_context(CTImageStorage)
    server = scp.start_server(("127.0.0.1", 0), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, lambda event: 0xA700)])  # out of resources
    try:
        port = server.server_address[1]
        outcome = _store(datasets, port)
    finally:
        server.shutdown()
    assert not outcome.ok and not outcome.permanent
    assert outcome.detail == f"C-STORE of CT Image Storage to CG_TERM@127.0.0.1:{port} failed with status 0xA700"


def test_a_peer_that_never_answers_the_association_request(datasets):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        outcome = _store(datasets, port, timeout=1.0)  # accepted by the kernel, never read
    assert not outcome.ok and not outcome.permanent
    assert outcome.detail == f"no answer from CG_TERM@127.0.0.1:{port} to the association request within 1s"


def test_an_scp_that_takes_none_of_the_classes_is_a_dead_letter_at_once(datasets):
    scp = AE(ae_title="CG_TERM")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    try:
        port = server.server_address[1]
        outcome = _store(datasets, port)
    finally:
        server.shutdown()
    assert not outcome.ok and outcome.permanent
    assert outcome.detail == (f"CG_TERM@127.0.0.1:{port} accepted none of the proposed presentation contexts "
                              "(SOP class / transfer syntax)")
