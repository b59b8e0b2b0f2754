"""Results back through the edge: a whole centre (gateway, workflow, api, delivery) whose township
chengguan-thc has its terminal behind its edge (``scp: {..., via_edge: true}``), DCMTK ``storescp``
as that terminal, the edge in front of the centre through the fault proxy.  A report signed through
the public API during an outage reaches the terminal once, within seconds of the link coming back;
a ``kill -9`` of a real ``yilian edge`` mid-delivery neither loses nor repeats it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from services.core.auth import issue_token
from services.edge.results import parts, terminal_of
from services.edge.settings import EdgeSettings
from tests.delivery.conftest import SECRET, STORESCP, Yilian, make_yilian  # noqa: F401 - a fixture
from tests.e2e.process import YilianProcess
from tests.support import free_port, wait_for

from .conftest import Edge, edge_settings
from .faultproxy import FaultProxy


class Terminal:
    """DCMTK storescp as the clinic's terminal: a file per C-STORE received (``+uf``: a resent
    instance shows as a second file) and its verbose log, which names every reception."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.log = directory.parent / "storescp.log"
        self.proc: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([STORESCP, "-v", "-aet", "CG_TERM", "+uf", "-od", str(self.directory),
                                          str(self.port)], stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def receptions(self) -> int:
        return self.log.read_text(errors="replace").count("Received Store Request") if self.log.exists() else 0


@pytest.fixture
async def centre(request, make_yilian, tmp_path: Path):
    """The whole centre, chengguan-thc's terminal behind its edge; yields (Yilian, Terminal).
    Indirect parameters override the delivery settings."""
    terminal = Terminal(tmp_path / "terminal")
    y = await make_yilian(scp_port=terminal.port, via_edge=True, **getattr(request, "param", {}))
    try:
        yield y, terminal
    finally:
        terminal.stop()


async def edge_deliveries(y: Yilian, result_id: str) -> list[dict[str, Any]]:
    return [e for e in await y.events("result.delivered")
            if e["data"]["result_id"] == result_id and e["data"]["channel"] == "edge"]


async def assert_at_terminal_once(y: Yilian, terminal: Terminal, result: dict[str, Any]) -> None:
    """The SR and the PDF at the terminal once each (one file, one reception), acknowledged at the centre once."""
    files = terminal.files()
    assert sorted(str(dcmread(f).SOPInstanceUID) for f in files) == sorted(
        [result["sr_sop_instance_uid"], result["pdf_sop_instance_uid"]]), files
    assert terminal.receptions() == 2
    assert len(await edge_deliveries(y, result["id"])) == 1
    assert len([a for a in await y.rt.store.find("audit", {"action": "result.deliver"})
                if a["resource"] == f"result/{result['id']}" and a["actor"] == "cg-edge"]) == 1
    done = (await y.deliveries(result["id"]))
    assert "dicom" not in done, "the centre never dials a terminal behind an edge"
    assert done["edge"]["state"] == "delivered"


async def test_result_signed_during_an_outage_reaches_the_terminal_once_soon_after(centre, tmp_path: Path):
    y, terminal = centre
    terminal.start()
    proxy = FaultProxy(y.api.port)
    await proxy.start()
    token = issue_token(y.rt.consortium, "cg-edge", SECRET)
    edge = Edge(edge_settings(tmp_path / "edge", study_quiet_seconds=0.3,
                              consortium_path=y.rt.settings.consortium_path), EdgeSettings(
        centre_url=f"http://127.0.0.1:{proxy.port}", token=token, organization="chengguan-thc", first_delay=0.05,
        max_delay=0.5, poll_seconds=0.1, heartbeat_seconds=0.5, results_max_delay=2.0))
    await edge.start()
    try:
        results = edge.service.results

        async def following() -> bool:
            return results.connected
        await wait_for(following, timeout=10, what="the edge following the result stream")
        study = await y.send_study()
        proxy.outage(True)
        report = await y.sign(study)
        rid = report["report_id"]

        async def ready_for_edge() -> bool:  # the centre keeps it for the edge: the PDF signed, nothing dialled
            d = (await y.deliveries(rid)).get("edge")
            return d is not None and d["attempts"] >= 1 and bool(await y.rt.store.get("signed_pdfs", rid))
        await wait_for(ready_for_edge, timeout=20, what="the result ready for the edge")
        await asyncio.sleep(1.0)  # the outage goes on: the edge's reconnects fail meanwhile
        assert terminal.files() == [] and not results.connected
        restored = time.monotonic()
        proxy.outage(False)
        await y.delivered(rid, "edge", timeout=30)
        elapsed = time.monotonic() - restored
        assert elapsed < 30, f"at the terminal {elapsed:.1f}s after the link came back"
        result = await y.rt.store.get("results", rid)
        await assert_at_terminal_once(y, terminal, result)
        acknowledged = [e for e in await y.events("result.acknowledged") if e["data"]["result_id"] == rid]
        assert len(acknowledged) == 1 and acknowledged[0]["data"]["mode"] == "dicom_store"  # routine: as by DICOM

        async def done_at_the_edge() -> bool:  # it writes done once the centre has answered
            return (await edge.service.status())["results_pending"] == 0
        await wait_for(done_at_the_edge, timeout=10, what="the result done at the edge")
        status = await edge.service.status()
        assert status["results_delivered"] == 1
        assert status["terminal"] == f"CG_TERM@127.0.0.1:{terminal.port}"
        assert not list((tmp_path / "edge" / "edge-results").glob("*/*.dcm")), "objects kept only until stored"
        print(f"result at the terminal {elapsed:.2f}s after the link came back")
    finally:
        await edge.stop()
        await proxy.stop()


async def test_kill_9_mid_result_delivery_stores_and_acknowledges_once(centre, tmp_path: Path):
    y, terminal = centre  # the terminal is down at first
    proxy = FaultProxy(y.api.port)
    await proxy.start()
    token = issue_token(y.rt.consortium, "cg-edge", SECRET)
    edge = YilianProcess(tmp_path / "edge", args=("edge",), YILIAN_CONSORTIUM=str(y.rt.settings.consortium_path),
                         YILIAN_AE_TITLE="CG_EDGE", YILIAN_STUDY_QUIET_SECONDS="0.3", YILIAN_GATEWAY_INDEXER="inline",
                         YILIAN_EDGE_CENTRE_URL=f"http://127.0.0.1:{proxy.port}", YILIAN_EDGE_TOKEN=token,
                         YILIAN_EDGE_ORGANIZATION="chengguan-thc", YILIAN_EDGE_RETRY_FIRST_SECONDS="0.05",
                         YILIAN_EDGE_RETRY_MAX_SECONDS="0.5", YILIAN_EDGE_RESULTS_RETRY_MAX_SECONDS="0.5",
                         YILIAN_EDGE_POLL_SECONDS="0.1", YILIAN_EDGE_HEARTBEAT_SECONDS="0.5",
                         YILIAN_EDGE_TERMINAL_TIMEOUT_SECONDS="2")
    edge.start()
    try:
        study = await y.send_study()
        rid = (await y.sign(study))["report_id"]
        objects = tmp_path / "edge" / "edge-results" / rid

        async def fetched() -> bool:  # the edge holds the objects and keeps failing at the terminal
            return len(list(objects.glob("*.dcm"))) == 2 and "refused" in (edge.log_tail(200) or "")
        await wait_for(fetched, timeout=30, what="the objects fetched and the terminal refusing connections")
        proxy.outage(True)  # the centre unreachable: the edge can store but not acknowledge
        terminal.start()

        async def stored() -> bool:  # the terminal's Success recorded by the edge (it cannot tell the centre)
            code, body = edge.http("/status")
            shown = json.loads(body) if code == 200 else {}
            return [r["state"] for r in shown.get("results", [])] == ["ack"]
        await wait_for(stored, timeout=30, what="the SR and PDF stored at the terminal, recorded by the edge")
        assert len(terminal.files()) == 2
        assert not await edge_deliveries(y, rid)
        edge.signal_group(signal.SIGKILL)  # killed with the result stored, not yet acknowledged
        proxy.outage(False)
        edge.start()
        await y.delivered(rid, "edge", timeout=30)
        await assert_at_terminal_once(y, terminal, await y.rt.store.get("results", rid))
        status = edge.http("/status")
        assert status[0] == 200
    finally:
        edge.kill()
        await proxy.stop()


@pytest.mark.parametrize("centre", [{"horizon": 1.0}], indirect=True)
async def test_a_result_no_edge_takes_is_dead_lettered_at_the_horizon_and_redriven(centre):
    """The centre never dials a terminal behind an edge; with no edge to take it, the result is a
    dead letter at the horizon like any channel's, and a re-drive makes it wait again."""
    y, terminal = centre
    terminal.start()
    rid = (await y.sign(await y.send_study()))["report_id"]

    async def dead() -> bool:
        return (await y.deliveries(rid)).get("edge", {}).get("state") == "dead"
    await wait_for(dead, timeout=20, what="the edge delivery dead-lettered")
    (failed,) = [e for e in await y.events("result.delivery_failed") if e["data"]["result_id"] == rid]
    assert failed["data"]["channel"] == "edge" and "edge did not store" in failed["data"]["reason"]
    assert terminal.files() == [] and terminal.receptions() == 0
    delivery = (await y.deliveries(rid))["edge"]
    letters = await y.ok("GET", "/api/v1/deliveries/dead-letters?channel=edge", "coord-county")
    assert [d["id"] for d in letters["items"]] == [delivery["id"]]
    await y.ok("POST", f"/api/v1/deliveries/{delivery['id']}/redrive", "coord-county", {})

    async def waiting_again() -> bool:
        d = (await y.deliveries(rid))["edge"]
        return d["state"] == "pending" and d["history"][-1].get("detail", "").startswith("ready for the clinic's edge")
    await wait_for(waiting_again, timeout=20, what="the re-driven delivery waiting for the edge again")


def test_the_terminal_comes_from_the_setting_or_the_consortium_file():
    from services.core.consortium import load_consortium
    from tests.support import EXAMPLE_CONSORTIUM
    consortium = load_consortium(EXAMPLE_CONSORTIUM)
    edge = EdgeSettings(centre_url="http://127.0.0.1:1", token="t", organization="chengguan-thc")
    assert terminal_of(consortium, edge).ae_title == "CG_TERM"
    lan = terminal_of(consortium, dataclasses.replace(edge, terminal="CG_PACS@192.168.1.20:104"))
    assert (lan.ae_title, lan.host, lan.port) == ("CG_PACS", "192.168.1.20", 104)
    for bad in ("192.168.1.20:104", "CG@host", "CG@host:0", "A_TITLE_TOO_LONG_X@h:1"):
        with pytest.raises(SystemExit, match="YILIAN_EDGE_TERMINAL"):
            terminal_of(consortium, dataclasses.replace(edge, terminal=bad))
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\nSR\r\n--b\r\nContent-Type: application/dicom\r\n\r\nPDF\r\n--b--\r\n"
    assert parts(body) == [b"SR", b"PDF"]
