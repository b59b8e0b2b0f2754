"""One AE title, or one peer address, cannot take every association slot: past its share the next
A-ASSOCIATE-RQ gets A-ASSOCIATE-RJ (rejected-transient, local-limit-exceeded), logged; others still
get in.  Real DCMTK ``storescu`` clients hold their associations open (the gateway holds back its
C-STORE-RSP), ``echoscu`` probes."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

from services.pacs_gateway.ingest import Ingest

from ..dicom_samples import echoscu, make_study, start_storescu
from ..support import wait_for
from .conftest import CHENGGUAN_CT, CHENGGUAN_ECG, DONGBA_DR, run

OTHER_CHENGGUAN_AE = "CG_DR1"


async def test_one_ae_and_one_peer_cannot_hold_every_association(make_gateway, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="yilian.pacs_gateway.ul")
    gateway = await make_gateway(dicom_max_associations_per_ae=2, dicom_max_associations_per_peer=3)
    native = gateway.service._native
    release = asyncio.Event()
    real = Ingest.commit
    holding: list[str] = []

    async def held(self, prepared, *args, **kwargs):  # the C-STORE-RSP waits: the sender's association stays open
        holding.append(prepared.received.calling_ae)
        await release.wait()
        return await real(self, prepared, *args, **kwargs)
    monkeypatch.setattr(Ingest, "commit", held)
    study = make_study(tmp_path, instances=3)
    senders = [start_storescu(gateway.port, [study.files[0]], calling=CHENGGUAN_CT),
               start_storescu(gateway.port, [study.files[1]], calling=CHENGGUAN_CT)]
    try:
        await wait_for(lambda: len(holding) == 2, timeout=20, what="two CG_CT1 associations held")
        # A third association from the same AE title: rejected-transient, local limit exceeded.
        echo = await run(echoscu, gateway.port, calling=CHENGGUAN_CT)
        assert echo.returncode != 0
        assert "Rejected Transient" in echo.output and "Local Limit Exceeded" in echo.output, echo.output
        rejected = [r for r in caplog.records if r.getMessage() == "association rejected"]
        assert [r.reason for r in rejected] == ["too many associations from this calling AE title"]
        assert rejected[0].calling_ae == CHENGGUAN_CT and rejected[0].associations_of_calling_ae == 2
        # Another AE title on the same address still gets in.
        assert (await run(echoscu, gateway.port, calling=CHENGGUAN_ECG)).returncode == 0
        # A third held association from this address fills its share: any AE title from it is refused.
        senders.append(start_storescu(gateway.port, [study.files[2]], calling=OTHER_CHENGGUAN_AE))
        await wait_for(lambda: len(holding) == 3, timeout=20, what="three associations from one peer")
        echo = await run(echoscu, gateway.port, calling=DONGBA_DR)
        assert echo.returncode != 0 and "Local Limit Exceeded" in echo.output, echo.output
        rejected = [r for r in caplog.records if r.getMessage() == "association rejected"]
        assert [r.reason for r in rejected[1:]] == ["too many associations from this peer address"]
        assert rejected[1].peer.startswith("127.0.0.1:") and rejected[1].connections_of_peer == 4
    finally:
        release.set()
        outputs = [await asyncio.to_thread(s.communicate, timeout=30) for s in senders]
    assert [s.returncode for s in senders] == [0, 0, 0], outputs
    assert await gateway.count("instances") == 3
    # The slots come back when the associations end.
    await wait_for(lambda: not native.by_calling and not native.by_host, timeout=10, what="no association counted")
    assert (await run(echoscu, gateway.port, calling=CHENGGUAN_CT)).returncode == 0


async def test_one_peers_idle_connections_do_not_crowd_others_out(make_gateway, caplog):
    # A peer (127.0.0.2) opens connections and never sends an A-ASSOCIATE-RQ: past its share they
    # get no slot, so a modality on another address still associates while they idle.
    caplog.set_level(logging.WARNING, logger="yilian.pacs_gateway.ul")
    gateway = await make_gateway(dicom_max_associations=4, dicom_max_associations_per_peer=2)
    native = gateway.service._native
    idle = []
    try:
        for _ in range(6):
            sock = socket.socket()
            sock.bind(("127.0.0.2", 0))
            await asyncio.to_thread(sock.connect, ("127.0.0.1", gateway.port))
            idle.append(sock)
        await wait_for(lambda: len(native._tasks) == 6, timeout=10, what="six idle connections accepted")
        assert (await run(echoscu, gateway.port, calling=CHENGGUAN_CT)).returncode == 0
        # The idle peer's own RQ, past its share, is rejected.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ECHO_FROM_127_0_0_2, str(gateway.port), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert out.decode().split()[-3:] == ["2", "3", "2"], out.decode()  # transient, provider, local limit
    finally:
        for sock in idle:
            sock.close()
    rejected = [r for r in caplog.records if r.getMessage() == "association rejected"]
    assert [r.reason for r in rejected] == ["too many associations from this peer address"]


# pynetdicom as a requestor bound to 127.0.0.2 (DCMTK's echoscu cannot choose its source address).
ECHO_FROM_127_0_0_2 = """
import sys
from pynetdicom import AE
ae = AE(ae_title="DB_DR1")
ae.add_requested_context("1.2.840.10008.1.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="YILIAN", bind_address=("127.0.0.2", 0))
if assoc.is_established:
    assoc.release()
    print("accepted")
elif assoc.is_rejected:
    rj = assoc.acceptor.primitive
    print("rejected", rj.result, rj.result_source, rj.diagnostic)
"""
