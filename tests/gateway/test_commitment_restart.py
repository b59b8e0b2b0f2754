"""Storage commitment reports survive the gateway: recorded before the N-ACTION answer, sent after a restart.

The requestor is CG_CT1 (a Chengguan modality, pynetdicom as SCU); its organisation's SCP
CG_TERM (a pynetdicom node, the requestor's own listener) is down when the commitment is
asked.  The gateway (``yilian serve pacs_gateway``, a real process) is killed with SIGKILL
after a failed attempt; CG_TERM comes up; the restarted gateway sends the report exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from services.core.holders import Holder
from services.pacs_gateway.commitment import STORAGE_COMMITMENT_INSTANCE, new_request
from services.workflow.leases import iso

from .. import dicom_samples as ds_
from ..e2e.process import YilianProcess
from ..support import EXAMPLE_CONSORTIUM, free_port, wait_for, wait_for_sync
from .conftest import CHENGGUAN_CT, DONGBA_DR, run
from .test_query_retrieve import moved_consortium

pytestmark = pytest.mark.timeout(120)

FAST_RETRIES = {"YILIAN_COMMITMENT_FIRST_DELAY_SECONDS": "0.2", "YILIAN_COMMITMENT_MAX_DELAY_SECONDS": "0.4",
                "YILIAN_COMMITMENT_POLL_SECONDS": "0.1", "YILIAN_COMMITMENT_TIMEOUT_SECONDS": "5"}


def consortium_with(path: Path, scp_ports: dict[str, int]) -> Path:
    data = yaml.safe_load(EXAMPLE_CONSORTIUM.read_text("utf-8"))
    for org in data["organizations"]:
        if org.get("scp") and org["scp"]["ae_title"] in scp_ports:
            org["scp"]["port"] = scp_ports[org["scp"]["ae_title"]]
    path.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    return path


def request_commitment(port: int, calling: str, transaction_uid: str, refs: list[tuple[str, str]]) -> int:
    """N-ACTION Request Storage Commitment as ``calling``; the response status."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", port, ae_title="YILIAN")
    assert assoc.is_established
    info = Dataset()
    info.TransactionUID = transaction_uid
    info.ReferencedSOPSequence = []
    for sop_class, uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, uid
        info.ReferencedSOPSequence.append(item)
    try:
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE)
    finally:
        assoc.release()
    return int(status.Status)


class ReportReceiver:
    """The requestor's own SCP: takes N-EVENT-REPORTs (the gateway in the SCP role) and keeps them."""

    def __init__(self, ae_title: str, port: int) -> None:
        self.reports: list[tuple[int, Dataset]] = []
        self._lock = threading.Lock()
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self.server = self.ae.start_server(("127.0.0.1", port), block=False,
                                           evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)])

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        with self._lock:
            self.reports.append((event.event_type, event.event_information))
        return 0x0000, None

    def stop(self) -> None:
        self.server.shutdown()


def commitment_doc(db: Path, transaction_uid: str) -> dict | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute('SELECT doc FROM "c_storage_commitments" WHERE id = ?', (transaction_uid,)).fetchone()
    return json.loads(row[0]) if row else None


def test_a_report_pending_when_the_gateway_is_killed_is_sent_after_restart(tmp_path):
    scp_port = free_port()
    consortium = consortium_with(tmp_path / "consortium.yaml", {"CG_TERM": scp_port})
    gateway = YilianProcess(tmp_path / "data", args=("serve", "pacs_gateway"), YILIAN_CONSORTIUM=str(consortium),
                            **FAST_RETRIES)
    db = tmp_path / "data" / "yilian.db"
    receiver: ReportReceiver | None = None
    gateway.start()
    try:
        study = ds_.make_study(tmp_path / "in", series=1, instances=2, patient_id="CG001")
        stored = ds_.storescu(gateway.dicom_port, study.files, calling=CHENGGUAN_CT, extra=["-R"])
        assert stored.returncode == 0, stored.output
        sent = [(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in map(dcmread, study.files)]
        never_sent = (ds_.CT_IMAGE, generate_uid())
        transaction_uid = generate_uid()

        assert request_commitment(gateway.dicom_port, CHENGGUAN_CT, transaction_uid, [*sent, never_sent]) == 0

        # CG_TERM is down: at least one attempt failed and a retry is scheduled. Then the crash.
        def retry_scheduled() -> bool:
            doc = commitment_doc(db, transaction_uid)
            return bool(doc and doc["state"] == "pending" and doc["attempts"] >= 1)
        wait_for_sync(retry_scheduled, timeout=20, what="a failed report attempt recorded")
        assert "could not associate" in commitment_doc(db, transaction_uid)["last_error"]
        gateway.kill()

        receiver = ReportReceiver("CG_TERM", scp_port)
        gateway.start()
        wait_for_sync(lambda: commitment_doc(db, transaction_uid)["state"] == "reported", timeout=30,
                      what="the report sent by the restarted gateway")
        assert gateway.terminate() == 0, gateway.log_tail()
    finally:
        gateway.kill()
        if receiver is not None:
            receiver.stop()

    assert len(receiver.reports) == 1, receiver.reports  # exactly once
    event_type, info = receiver.reports[0]
    assert event_type == 2  # some failed
    assert info.TransactionUID == transaction_uid
    assert info.RetrieveAETitle == "YILIAN"
    assert sorted((i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence) \
        == sorted(sent)
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID, i.FailureReason)
            for i in info.FailedSOPSequence] == [(*never_sent, 0x0112)]  # no such object instance
    doc = commitment_doc(db, transaction_uid)
    assert (doc["committed"], doc["failed"], doc["calling_ae"], doc["organization"]) \
        == (2, 1, CHENGGUAN_CT, "chengguan-thc")
    assert doc["attempts"] >= 2


async def test_an_unreachable_requestor_fails_after_the_horizon(make_gateway, tmp_path, monkeypatch):
    for name, value in {**FAST_RETRIES, "YILIAN_COMMITMENT_FIRST_DELAY_SECONDS": "0.05",
                        "YILIAN_COMMITMENT_MAX_DELAY_SECONDS": "0.1",
                        # Long enough for a retry even when a loaded machine delays the first attempt.
                        "YILIAN_COMMITMENT_HORIZON_SECONDS": "3"}.items():
        monkeypatch.setenv(name, value)
    gw = await make_gateway()
    moved_consortium(gw, {"CG_TERM": free_port()})  # where nothing listens
    transaction_uid = generate_uid()
    ref = (ds_.CT_IMAGE, generate_uid())
    assert await run(request_commitment, gw.port, CHENGGUAN_CT, transaction_uid, [ref]) == 0
    # The same Transaction UID from another AE is refused: it must not redirect someone's report.
    assert await run(request_commitment, gw.port, DONGBA_DR, transaction_uid, [ref]) == 0x0106

    async def failed() -> bool:
        doc = await gw.rt.store.get("storage_commitments", transaction_uid)
        return doc is not None and doc["state"] == "failed"
    await wait_for(failed, timeout=20, what="the request failed after the horizon")
    doc = await gw.rt.store.get("storage_commitments", transaction_uid)
    assert doc["attempts"] >= 2 and doc["next_attempt_at"] is None
    assert doc["calling_ae"] == CHENGGUAN_CT and "could not associate" in doc["last_error"]


async def test_a_claim_left_by_a_dead_process_is_taken_over(make_gateway, tmp_path):
    """A process killed while sending leaves ``sending`` with its lease; once it expires the report goes out."""
    scp_port = free_port()
    receiver = ReportReceiver("CG_TERM", scp_port)
    try:
        gw = await make_gateway()
        moved_consortium(gw, {"CG_TERM": scp_port})
        missing = (ds_.CT_IMAGE, generate_uid())
        transaction_uid = generate_uid()
        destination = gw.rt.consortium.endpoint("CG_TERM")
        doc = new_request(transaction_uid, calling_ae=CHENGGUAN_CT, organization="chengguan-thc",
                          destination=destination, requested=[missing], at=iso(time.time() - 60))
        doc.update(state="sending", worker="dead-host:1:abc", lease_expires_at=iso(time.time() - 1), version=2)
        async with gw.rt.store.transaction() as tx:
            await tx.insert("storage_commitments", doc)
        gw.service.commitments.wake()  # rather than wait for its poll

        async def reported() -> bool:
            d = await gw.rt.store.get("storage_commitments", transaction_uid)
            return d["state"] == "reported"
        await wait_for(reported, timeout=20, what="the expired claim taken over and reported")
        assert len(receiver.reports) == 1
        event_type, info = receiver.reports[0]
        assert event_type == 2 and info.TransactionUID == transaction_uid
        assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence] == [(missing[1], 0x0112)]
        assert "ReferencedSOPSequence" not in info  # nothing committed
        d = await gw.rt.store.get("storage_commitments", transaction_uid)
        assert d["attempts"] == 1 and d["worker"] is None and d["version"] == 4
    finally:
        receiver.stop()


async def test_a_claim_whose_holder_is_gone_is_taken_at_once_one_held_elsewhere_waits_for_its_lease(
        make_gateway, tmp_path):
    """A process on the same data directory that has ended (its lock under ``holders/`` is free) does
    not make the report wait for its lease; a holder not known here (another host) still does."""
    scp_port = free_port()
    receiver = ReportReceiver("CG_TERM", scp_port)
    try:
        gw = await make_gateway()
        moved_consortium(gw, {"CG_TERM": scp_port})
        ended = Holder(gw.rt.settings.data_dir / "holders")
        ended.open()
        await ended.stop()  # the process is gone: its lock is free
        destination = gw.rt.consortium.endpoint("CG_TERM")
        ids = {}
        for worker in (ended.id, "other-host:1:abc"):
            ids[worker] = transaction_uid = generate_uid()
            doc = new_request(transaction_uid, calling_ae=CHENGGUAN_CT, organization="chengguan-thc",
                              destination=destination, requested=[(ds_.CT_IMAGE, generate_uid())],
                              at=iso(time.time() - 60))
            doc.update(state="sending", worker=worker, lease_expires_at=iso(time.time() + 600), version=2)
            async with gw.rt.store.transaction() as tx:
                await tx.insert("storage_commitments", doc)
        gw.service.commitments.wake()

        async def reported() -> bool:
            return (await gw.rt.store.get("storage_commitments", ids[ended.id]))["state"] == "reported"
        await wait_for(reported, timeout=20, what="the gone holder's claim taken over and reported")
        assert [info.TransactionUID for _, info in receiver.reports] == [ids[ended.id]]
        elsewhere = await gw.rt.store.get("storage_commitments", ids["other-host:1:abc"])
        assert elsewhere["state"] == "sending" and elsewhere["worker"] == "other-host:1:abc"
    finally:
        receiver.stop()
