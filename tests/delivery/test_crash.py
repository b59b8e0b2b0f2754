"""``kill -9`` of ``yilian up`` in the middle of delivering a result, then a restart.

The clinic's SCP is a black hole (accepts the TCP connection, never answers) and its HIS
holds the webhook request, so both attempts are in flight when the process is killed.  Then
the real storescp takes the SCP's port, the process restarts on the same data directory,
the dead worker's leases expire and the deliveries resume: the storescp ends with exactly
one SR and one PDF, the webhook receiver applies the result exactly once (every request
with the same Idempotency-Key), and each channel's ``result.delivered`` is published once.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from pydicom import dcmread

from services.core.auth import issue_token
from services.core.consortium import load_consortium
from services.core.events import registry
from services.core.store.sqlite import SqliteStore

from ..dicom_samples import make_study, storescu
from ..e2e.process import YilianProcess, running
from ..support import free_port, wait_for
from .conftest import WEBHOOK_ENV, WEBHOOK_SECRET, StoreSCP, consortium_file

JWT = "test-secret-not-for-production"  # what YilianProcess sets


class Terminal:
    """The clinic's SCP port: first a black hole (accepts, never says a word: a hung terminal),
    then, after :meth:`come_back`, a relay to the real storescp behind it.  One listening socket
    throughout, so the port never has to be bound twice."""

    def __init__(self, port: int, *, answers: int | None = None) -> None:
        # answers: the C-STORE responses let through to Yilian; later ones are held (never sent)
        self.answers = answers
        self.answered = 0
        self.held = threading.Event()  # a response was held back
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.accepted: list[socket.socket] = []
        self.forward_to: int | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def come_back(self, port: int) -> None:
        for conn in self.accepted:  # the hung associations die
            conn.close()
        self.forward_to = port

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            if self.forward_to is not None:
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.forward_to))
                except OSError:
                    conn.close()  # not listening yet: the delivery retries
                    continue
                threading.Thread(target=self._pipe, args=(conn, upstream), daemon=True).start()
                threading.Thread(target=self._responses, args=(upstream, conn), daemon=True).start()

    def _responses(self, src: socket.socket, dst: socket.socket) -> None:
        """The SCP's PDUs to Yilian, whole, counting the DIMSE responses (command PDVs, last
        fragment) and holding every PDU from the one past ``answers`` on."""
        buffer = b""
        try:
            while data := src.recv(65536):
                buffer += data
                while len(buffer) >= 6 and len(buffer) >= 6 + int.from_bytes(buffer[2:6], "big"):
                    end = 6 + int.from_bytes(buffer[2:6], "big")
                    pdu, buffer = buffer[:end], buffer[end:]
                    if pdu[0] == 0x04 and _last_command_fragment(pdu):  # P-DATA-TF
                        self.answered += 1
                    if self.answers is not None and self.answered > self.answers:
                        self.held.set()
                        continue
                    dst.sendall(pdu)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def _last_command_fragment(pdu: bytes) -> bool:
    """Whether a P-DATA-TF PDU ends a DIMSE command (PS3.8 E.2: message control header bits 0, 1)."""
    at = 6
    while at + 6 <= len(pdu):
        length = int.from_bytes(pdu[at:at + 4], "big")
        if pdu[at + 5] & 0x03 == 0x03:
            return True
        at += 4 + length
    return False


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _store_of(data_dir: Path):
    store = SqliteStore(f"sqlite:///{data_dir / 'yilian.db'}", validate=registry().validate)
    await store.open()
    return store


@pytest.mark.slow
async def test_kill_9_mid_delivery_then_restart_delivers_each_channel_exactly_once(tmp_path, webhook_receiver):
    scp_port = free_port()
    hole = Terminal(scp_port)
    webhook_receiver.hold = asyncio.Event()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    consortium = consortium_file(tmp_path, scp_port=scp_port, webhook_port=webhook_receiver.port)
    proc = YilianProcess(data_dir, YILIAN_CONSORTIUM=str(consortium), YILIAN_STUDY_QUIET_SECONDS="0.3",
                         YILIAN_LOG_LEVEL="INFO", YILIAN_DELIVERY_LEASE_SECONDS="1",
                         # the webhook waits while the first PDF is rendered and signed (CA and key
                         # made at a first start): both channels must still be in flight at the kill
                         YILIAN_DELIVERY_DICOM_TIMEOUT_SECONDS="2", YILIAN_DELIVERY_WEBHOOK_TIMEOUT_SECONDS="30",
                         YILIAN_DELIVERY_FIRST_DELAY_SECONDS="0.2", YILIAN_DELIVERY_MAX_DELAY_SECONDS="1",
                         YILIAN_DELIVERY_POLL_SECONDS="0.1", **{WEBHOOK_ENV: WEBHOOK_SECRET})
    await asyncio.to_thread(proc.start)
    scp = StoreSCP(tmp_path / "clinic-terminal", free_port())
    c = load_consortium(consortium)
    base = f"http://127.0.0.1:{proc.http_port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def call(method: str, path: str, user: str, body=None, status: int = 200):
                async with http.request(method, base + path, json=body,
                                        headers={"Authorization": f"Bearer {issue_token(c, user, JWT)}"}) as r:
                    data = await r.json()
                    assert r.status == status, (path, r.status, data)
                    return data

            study = make_study(tmp_path / "modality", series=1, instances=2)
            sent = await asyncio.to_thread(storescu, proc.dicom_port, study.files, calling="CG_CT1")
            assert sent.returncode == 0, sent.output

            async def received() -> bool:
                async with http.get(base + f"/api/v1/studies/{study.study_uid}", headers={
                        "Authorization": f"Bearer {issue_token(c, 'cg-clinic', JWT)}"}) as r:
                    return r.status == 200 and (await r.json()).get("state") == "received"
            await wait_for(received, timeout=20, what="study received")
            request = await call("POST", "/api/v1/reading-requests", "cg-clinic", {
                "study_uid": study.study_uid, "kind": "imaging", "priority": "stat", "clinical_question": "外伤"},
                status=201)
            await call("POST", f"/api/v1/reading-requests/{request['id']}/claim", "dr-wang", {})
            signed = await call("POST", f"/api/v1/reading-requests/{request['id']}/sign", "dr-wang",
                                {"findings": "右侧第5肋骨骨折。", "impression": "右侧肋骨骨折"})
            report_id = signed["report_id"]

            # both attempts in flight: the SCP has the connection, the HIS has the request
            await wait_for(lambda: hole.accepted and webhook_receiver.requests, timeout=20, interval=0.005,
                           what="both channels mid-delivery")
            helpers = proc.children()  # the PDF was rendered: its worker process is among them
            await asyncio.to_thread(proc.kill)
        # Nothing the killed process started lives on as an orphan.
        assert len(helpers) >= 2, helpers
        await wait_for(lambda: not any(map(running, helpers)), timeout=10,
                       what=f"the killed process's helpers {helpers} exit")
        store = await _store_of(data_dir)
        try:
            states = {d["channel"]: d["state"] for d in await store.find("deliveries", {"result_id": report_id})}
        finally:
            await store.close()
        assert states == {"dicom": "delivering", "webhook": "delivering", "inbox": "delivered"}, states

        scp.start()
        await wait_for(lambda: _listening(scp.port), timeout=10, what="storescp listening")
        hole.come_back(scp.port)
        webhook_receiver.hold.set()
        await asyncio.to_thread(proc.start)

        async def all_delivered() -> bool:
            s = await _store_of(data_dir)
            try:
                return {d["state"] for d in await s.find("deliveries", {"result_id": report_id})} == {"delivered"}
            finally:
                await s.close()
        await wait_for(all_delivered, timeout=40, interval=0.3, what="deliveries resumed after the restart")
        await asyncio.to_thread(proc.terminate)

        files = scp.files()
        classes = sorted(str(dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files)
        assert classes == ["1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.88.11"]
        keys = {r["headers"]["Idempotency-Key"] for r in webhook_receiver.requests}
        assert len(webhook_receiver.requests) >= 2 and len(keys) == 1  # resent after the crash, same key
        assert [a["result_id"] for a in webhook_receiver.applied()] == [report_id]
        store = await _store_of(data_dir)
        try:
            delivered = [le.event.data["channel"] for le in await store.read_log(0, limit=10_000,
                                                                               types=["result.delivered"])]
            assert sorted(delivered) == ["dicom", "inbox", "webhook"]
            assert await store.count("dead_letters") == 0
        finally:
            await store.close()
    finally:
        hole.close()
        scp.stop()
        proc.kill()


async def _sign(http: aiohttp.ClientSession, proc: YilianProcess, c, directory: Path, *, count: int) -> list[str]:
    """``count`` studies sent by the clinic's modality, read and signed: their report ids."""
    base = f"http://127.0.0.1:{proc.http_port}"

    async def call(method: str, path: str, user: str, body=None, status: int = 200):
        async with http.request(method, base + path, json=body,
                                headers={"Authorization": f"Bearer {issue_token(c, user, JWT)}"}) as r:
            data = await r.json()
            assert r.status == status, (path, r.status, data)
            return data

    studies = [make_study(directory / f"study{i}", series=1, instances=2, patient_id=f"P{i:03d}")
               for i in range(count)]
    sent = await asyncio.to_thread(storescu, proc.dicom_port, [f for s in studies for f in s.files],
                                   calling="CG_CT1")
    assert sent.returncode == 0, sent.output

    async def received() -> bool:
        for study in studies:
            async with http.get(base + f"/api/v1/studies/{study.study_uid}", headers={
                    "Authorization": f"Bearer {issue_token(c, 'cg-clinic', JWT)}"}) as r:
                if r.status != 200 or (await r.json()).get("state") != "received":
                    return False
        return True
    await wait_for(received, timeout=20, what="studies received")
    reports = []
    for study in studies:
        request = await call("POST", "/api/v1/reading-requests", "cg-clinic", {
            "study_uid": study.study_uid, "kind": "imaging", "priority": "stat", "clinical_question": "胸痛"},
            status=201)
        await call("POST", f"/api/v1/reading-requests/{request['id']}/claim", "dr-wang", {})
        signed = await call("POST", f"/api/v1/reading-requests/{request['id']}/sign", "dr-wang",
                            {"findings": "右侧气胸，肺组织压缩约80%。", "impression": "右侧张力性气胸"})
        reports.append(signed["report_id"])
    return reports


async def _dicom_deliveries(data_dir: Path) -> list[dict]:
    store = await _store_of(data_dir)
    try:
        return await store.find("deliveries", {"channel": "dicom"})
    finally:
        await store.close()


def _stored_per_sop_instance(scp: StoreSCP) -> collections.Counter:
    return collections.Counter(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in scp.files())


@pytest.mark.slow
async def test_kill_9_with_the_default_leases_results_reach_the_clinic_right_after_the_restart(tmp_path):
    """Issue 19, defect 1: the restarted process takes what the dead one (same data directory) was
    delivering at once, instead of waiting out its 121 s leases."""
    hole = Terminal(free_port())
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    consortium = consortium_file(tmp_path, scp_port=hole.sock.getsockname()[1], webhook_port=None)
    # the default delivery settings: lease max(120, 4 × 30 + 1) = 121 s
    proc = YilianProcess(data_dir, YILIAN_CONSORTIUM=str(consortium), YILIAN_STUDY_QUIET_SECONDS="0.3")
    await asyncio.to_thread(proc.start)
    scp = StoreSCP(tmp_path / "clinic-terminal", free_port())
    c = load_consortium(consortium)
    results = 3
    try:
        async with aiohttp.ClientSession() as http:
            reports = await _sign(http, proc, c, tmp_path / "modality", count=results)
            # every SR is on its way: each association request hangs at the black hole
            await wait_for(lambda: len(hole.accepted) >= results, timeout=30, interval=0.01,
                           what="every result's association in flight")
            await asyncio.to_thread(proc.kill)
        assert {d["state"] for d in await _dicom_deliveries(data_dir)} == {"delivering"}

        scp.start()
        await wait_for(lambda: _listening(scp.port), timeout=10, what="storescp listening")
        hole.come_back(scp.port)
        restarted = time.monotonic()
        await asyncio.to_thread(proc.start)
        ready = time.monotonic() - restarted

        async def all_delivered() -> bool:
            return {d["state"] for d in await _dicom_deliveries(data_dir)} == {"delivered"}
        # within 60 s of the restart (the leases would hold them 121 s)
        await wait_for(all_delivered, timeout=60 - ready, interval=0.1, what="every result delivered after the restart")
        delay = time.monotonic() - restarted
        await asyncio.to_thread(proc.terminate)
        print(f"\nrestart: ready after {ready:.1f}s, {results} results at the clinic after {delay:.1f}s")
        # what the restart itself costs is the start; after it, only a poll and the attempts
        assert delay - ready < 30, f"results at the clinic {delay - ready:.1f}s after the restarted process was ready"
        store = await _store_of(data_dir)
        try:
            srs = {(await store.get("results", r))["sr_sop_instance_uid"] for r in reports}
        finally:
            await store.close()
        assert srs <= set(_stored_per_sop_instance(scp))
    finally:
        hole.close()
        scp.stop()
        proc.kill()


@pytest.mark.slow
async def test_an_sr_the_clinic_accepted_before_kill_9_is_not_sent_again(tmp_path):
    """Issue 19, defect 2: each instance the clinic's SCP accepted is recorded at its Success, so
    after a kill -9 only what was not answered yet goes again."""
    hole = Terminal(free_port(), answers=1)  # the SR's C-STORE response goes through, the PDF's is held
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    consortium = consortium_file(tmp_path, scp_port=hole.sock.getsockname()[1], webhook_port=None)
    proc = YilianProcess(data_dir, YILIAN_CONSORTIUM=str(consortium), YILIAN_STUDY_QUIET_SECONDS="0.3")
    scp = StoreSCP(tmp_path / "clinic-terminal", free_port(), unique=True)  # a file per C-STORE received
    scp.start()
    await wait_for(lambda: _listening(scp.port), timeout=10, what="storescp listening")
    hole.come_back(scp.port)
    await asyncio.to_thread(proc.start)
    c = load_consortium(consortium)
    try:
        async with aiohttp.ClientSession() as http:
            [report_id] = await _sign(http, proc, c, tmp_path / "modality", count=1)
        store = await _store_of(data_dir)
        try:  # the delivery service records the result when it consumes report.signed, just after
            await wait_for(lambda: store.get("results", report_id), timeout=30, what="the result recorded")
            result = await store.get("results", report_id)
        finally:
            await store.close()
        sr_uid, pdf_uid = result["sr_sop_instance_uid"], result["pdf_sop_instance_uid"]
        # Yilian has the SR's Success; the PDF is stored at the SCP but its Success never arrives
        await wait_for(hole.held.is_set, timeout=30, what="the PDF's C-STORE response held back")

        async def sr_recorded() -> bool:
            return any(sr_uid in (d.get("sent") or []) for d in await _dicom_deliveries(data_dir))
        deadline = time.monotonic() + 5  # the record follows the Success at once; before the fix, never
        while not await sr_recorded() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(proc.kill)
        assert _stored_per_sop_instance(scp) == {sr_uid: 1, pdf_uid: 1}

        hole.answers = None
        hole.come_back(scp.port)  # the held association dies with the process; new ones go through
        await asyncio.to_thread(proc.start)

        async def delivered() -> bool:
            return [d["state"] for d in await _dicom_deliveries(data_dir)] == ["delivered"]
        await wait_for(delivered, timeout=60, interval=0.1, what="the delivery finished after the restart")
        await asyncio.to_thread(proc.terminate)
        # the SR once; the PDF, stored but unanswered at the kill, again (same SOP Instance UID)
        assert _stored_per_sop_instance(scp) == {sr_uid: 1, pdf_uid: 2}
    finally:
        hole.close()
        scp.stop()
        proc.kill()
