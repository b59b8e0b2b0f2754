"""The edge's two pages in headless Chromium, one walk against a real edge and a real centre:

the coordinator's dashboard shows the clinic's edge live (heartbeats posted with the edge's token
through the real API) and turns its row red, with a count in the panel's header, when the link
drops and the heartbeats stop (YILIAN_EDGE_SILENT_SECONDS=3); the clinic's own page shows the
study cut off mid-way (progress, outage since …, bytes pending; no patient name) and, without a
reload, the link back and the study delivered.  Screenshots in ``test-artifacts/edge/``."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from services.core.auth import issue_token
from tests import dicom_samples as ds_
from tests.dicomweb.conftest import SECRET
from tests.monitor.test_dashboard import CHROMEDRIVER, CHROMIUM, attribute_of, browser, text_of, wait_page
from tests.support import ROOT, wait_for

ARTIFACTS = ROOT / "test-artifacts" / "edge"
MODALITY = "CG_CT1"  # a modality AE of chengguan-thc
PATIENT = "王^小明"
INSTANCES = 8

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="Debian chromium and chromium-driver are not installed (make debs)")


def study_files(tmp: Path) -> tuple[str, list[Path], Path]:
    """A DX study of 8 incompressible instances of 40 kB: ten seconds on a 30 kB/s link; and, for the
    centre, another study holding the last one's SOP Instance UID (so the centre refuses it for good)."""
    study, series = generate_uid(), generate_uid()
    (tmp / "src").mkdir()
    files = []
    for i in range(1, INSTANCES + 1):
        ds = ds_.make_instance(study_uid=study, series_uid=series, instance_number=i, rows=200, columns=200,
                               modality="DX", sop_class_uid=ds_.DX_IMAGE, patient_name=PATIENT, charset="ISO_IR 192",
                               accession_number="CG20261203001", study_description="胸部正位 Chest PA")
        ds.PixelData = os.urandom(200 * 200)
        files.append(ds_.write(ds, tmp / "src" / f"{i}.dcm"))
    clash = ds_.make_instance(sop_instance_uid=ds.SOPInstanceUID, modality="DX", sop_class_uid=ds_.DX_IMAGE)
    return study, files, ds_.write(clash, tmp / "clash.dcm")


def storescu(port: int, files: list[Path], called: str = "CG_EDGE") -> None:
    out = subprocess.run([ds_.STORESCU, "-aet", MODALITY, "-aec", called, "127.0.0.1", str(port),
                          *map(str, files)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def shoot(driver, name: str, size: tuple[int, int]) -> None:
    driver.set_window_size(*size)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(ARTIFACTS / f"{name}-{size[0]}x{size[1]}.png"))


@pytest.mark.timeout(120)
async def test_the_dashboard_shows_the_edge_red_when_silent_and_the_edge_page_shows_the_study(
        centre, link_to, make_edge, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    monkeypatch.setenv("YILIAN_EDGE_SILENT_SECONDS", "3")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proxy = await link_to(bytes_per_second=30_000)
    edge = await make_edge(proxy, batch_bytes=1, heartbeat_seconds=0.3)  # one instance per STOW request
    driver = await asyncio.to_thread(browser, tmp_path / "chromium-profile")
    try:
        # The coordinator's dashboard: the edge is there, alive, named by its clinic.
        token = issue_token(centre.rt.consortium, "coord-county", SECRET)
        dashboard = f"http://127.0.0.1:{centre.service.port}/dashboard#token={token}"
        await asyncio.to_thread(driver.get, dashboard)
        row = '#edges tr[data-edge="cg-edge"]'
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the edge's row")
        assert "城关镇卫生院" in await asyncio.to_thread(text_of, driver, f"{row} [data-col=site]")
        assert "silent" not in await asyncio.to_thread(attribute_of, driver, row, "class")
        heartbeat = await asyncio.to_thread(text_of, driver, f"{row} [data-col=heartbeat]")
        assert "UTC+8" in heartbeat, heartbeat
        dashboard_tab = driver.current_window_handle

        # The technician sends a study; the link drops after the first instances got through.
        uid, files, clash = study_files(tmp_path)
        await asyncio.to_thread(storescu, centre.gateway.dicom_port, [clash], "YILIAN")
        await asyncio.to_thread(storescu, edge.dicom_port, files)

        async def partly_sent() -> bool:  # and a heartbeat with the backlog reached the centre
            s = await edge.service.status()
            beat = await centre.rt.store.get("edge_heartbeats", "cg-edge") or {}
            return beat.get("backlog_instances", 0) > 0 and any(p["id"] == uid and p["sent"] >= 2 for p in s["studies"])
        await wait_for(partly_sent, timeout=30, what="two instances at the centre, the backlog in a heartbeat")
        proxy.outage(True)
        sent = next(p["sent"] for p in (await edge.service.status())["studies"] if p["id"] == uid)
        assert sent < INSTANCES, "the study crossed before the link dropped: slow the link in this test"

        # The dashboard turns the row red by itself, and counts the silent edge in its header.
        await asyncio.to_thread(wait_page, driver, lambda d: "silent" in d.find_element(
            By.CSS_SELECTOR, row).get_attribute("class"), "the edge's row turning red", 15)
        assert await asyncio.to_thread(attribute_of, driver, "#edges .silent-count", "data-silent") == "1"
        assert "alarm" in await asyncio.to_thread(attribute_of, driver, "#edges", "class")
        backlog = await asyncio.to_thread(text_of, driver, f'{row} [data-backlog="backlog_instances"] b')
        assert int(backlog) > 0  # the last heartbeat before the outage carried the backlog
        for size in ((1366, 768), (390, 844)):
            await asyncio.to_thread(shoot, driver, "dashboard-edge-silent", size)

        # The clinic's page (a second tab; the dashboard stays open): the study cut off, the outage.
        await asyncio.to_thread(driver.switch_to.new_window, "tab")
        await asyncio.to_thread(driver.set_window_size, 1366, 768)
        await asyncio.to_thread(driver.get, f"http://127.0.0.1:{edge.service.port}/?refresh=1")
        study = f'[data-study="{uid}"]'
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_element(
            By.CSS_SELECTOR, "[data-link]").get_attribute("data-link") == "outage", "the outage")
        progress = await asyncio.to_thread(text_of, driver, f"#pending {study} [data-col=sent]")
        assert progress == f"{sent}/{INSTANCES}", progress
        value = await asyncio.to_thread(attribute_of, driver, f"{study} progress", "value")
        assert 0 < float(value) < 100
        page_text = await asyncio.to_thread(text_of, driver, "body")
        assert "自 " in page_text and "+08:00" in page_text  # outage since …, local time with its offset
        assert "CG20261203001" in page_text and "胸部正位" in page_text
        assert "王" not in page_text and "小明" not in page_text  # no patient name on the page
        assert await asyncio.to_thread(text_of, driver, "[data-kpi=backlog_instances] b") == str(INSTANCES - sent)
        assert await asyncio.to_thread(text_of, driver, "[data-kpi=bytes_pending] b") != "0 B"
        for size in ((1366, 768), (390, 844)):
            await asyncio.to_thread(shoot, driver, "edge-page-outage", size)

        # The link comes back: the page follows by itself (no reload: the marker survives).
        await asyncio.to_thread(driver.set_window_size, 390, 500)  # a phone's page, scrolled down a little
        await asyncio.to_thread(driver.execute_script, "window.yilianMarker = 1; window.scrollTo(0, 40)")
        scrolled = await asyncio.to_thread(driver.execute_script, "return window.scrollY")
        proxy.bucket.rate = None  # the link back, and uncapped: the rest crosses at once
        proxy.outage(False)
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#recent {study}"),
                                "the study delivered", 30)
        assert await asyncio.to_thread(driver.execute_script, "return window.yilianMarker") == 1
        assert scrolled > 0 and await asyncio.to_thread(driver.execute_script, "return window.scrollY") == scrolled
        assert await asyncio.to_thread(attribute_of, driver, "[data-link]", "data-link") == "connected"
        # the one instance the centre refused for good is shown with its reason; the rest completed
        refused = await asyncio.to_thread(text_of, driver, f"#recent {study} .refused")
        assert "0xA900" in refused and "数据集与SOP类不符" in refused, refused
        assert await asyncio.to_thread(text_of, driver, f"#recent {study} [data-col=sent]") == f"{INSTANCES - 1}/{INSTANCES}"
        for size in ((1366, 768), (390, 844)):
            await asyncio.to_thread(shoot, driver, "edge-page-delivered", size)
        # Below: the results on their way to the terminal and the worklist copy, as a phone shows them.
        assert await asyncio.to_thread(text_of, driver, "[data-kpi=results_pending] b") == "0"
        assert await asyncio.to_thread(text_of, driver, "[data-kpi=worklist_synced] b") != "—"  # synced
        await asyncio.to_thread(driver.set_window_size, 390, 844)
        await asyncio.to_thread(driver.execute_script, "document.getElementById('results').scrollIntoView()")
        await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "edge-page-results-worklist-390x844.png"))

        # ... and the dashboard's row is no longer red.
        await asyncio.to_thread(driver.switch_to.window, dashboard_tab)
        await asyncio.to_thread(wait_page, driver, lambda d: "silent" not in d.find_element(
            By.CSS_SELECTOR, row).get_attribute("class"), "the edge alive again", 15)
        console = [e for e in await asyncio.to_thread(driver.get_log, "browser") if e["level"] == "SEVERE"]
        assert not console, console
    finally:
        await asyncio.to_thread(driver.quit)
