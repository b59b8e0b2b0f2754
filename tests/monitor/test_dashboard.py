"""The dashboard in headless Chromium: after a scripted workload it shows the right queue
numbers, an SLA-risk row, the highlighted dead letter and unacknowledged critical finding,
and updates live when the next request arrives.  Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.core.events import Event

from ..support import ROOT, wait_for

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"
CT = "1.2.826.0.1.500."

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="Debian chromium and chromium-driver are not installed (make debs)")


def browser(profile: Path, size: str = "1366,768"):
    """Headless Chromium whose own zone is UTC (TZ=UTC): the page must still show the consortium's."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                f"--window-size={size}", f"--user-data-dir={profile}", "--lang=zh-CN"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for failure messages
    service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TZ": "UTC"})
    return webdriver.Chrome(service=service, options=options)


async def workload(world) -> dict[str, str]:
    """county-imaging: 6 routine CTs (2 claimed, 1 signed), 1 urgent one 100 min old (at risk);
    a signed report whose delivery was dead-lettered and whose critical finding nobody acknowledged."""
    for i in range(1, 9):
        await world.add_study(f"{CT}{i}", "chengguan-thc" if i % 2 else "dongba-thc", ["CT"])
    await world.settle()
    urgent = await world.request(f"{CT}8", "db-clinic", priority="urgent")
    world.clock.advance(100 * 60)
    routine = [await world.request(f"{CT}{i}", "cg-clinic" if i % 2 else "db-clinic") for i in range(1, 7)]
    await world.claim(routine[0]["id"], "dr-wang")
    await world.claim(routine[1]["id"], "dr-li")
    world.clock.advance(10 * 60)
    signed = await world.sign(routine[0]["id"], "dr-wang", critical=True)
    await world.claim(routine[2]["id"], "dr-wang")
    report = await world.store.get("reports", signed["report_id"])
    common = {"result_id": "res-" + report["id"], "report_id": report["id"], "organization": report["organization"],
              "centre": report["centre"], "study_uid": report["study_uid"], "critical": True}
    await world.rt.bus.publish(
        Event("result.delivery_failed", subject=common["result_id"], source="/yilian/delivery", data={
            **common, "delivery_id": "dl-1", "channel": "webhook", "attempts": 8,
            "reason": "webhook answered 503 for 24 h"}),
        Event("critical.unacknowledged", subject=common["result_id"], source="/yilian/delivery", data={
            **common, "escalation": 1, "contact": "城关镇卫生院院办", "due_at": "2026-11-18T12:00:00.000Z",
            "overdue_seconds": 600.0}))
    await world.settle()
    return {"urgent": urgent["id"], "signed": signed["id"]}


def text_of(driver, css: str) -> str:
    return _read(driver, css, lambda e: e.text.strip())


def attribute_of(driver, css: str, name: str) -> str:
    return _read(driver, css, lambda e: e.get_attribute(name))


def _read(driver, css: str, read):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    for _ in range(20):  # the board re-renders on every live update: find the element again
        try:
            return read(driver.find_element(By.CSS_SELECTOR, css))
        except StaleElementReferenceException:
            continue
    return read(driver.find_element(By.CSS_SELECTOR, css))


def wait_page(driver, condition, what: str, timeout: float = 20.0):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        # An element found just before a live re-render is stale when read: look again, not fail.
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                             ).until(condition)
    except TimeoutException:
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "monitor-dashboard-failure.png"))
        console = "\n".join(e["message"] for e in driver.get_log("browser"))
        pytest.fail(f"page never showed {what}; console:\n{console}")


@pytest.mark.timeout(120)
async def test_dashboard_shows_the_queues_risk_and_alerts_and_updates_live(world, tmp_path):
    from selenium.webdriver.common.by import By
    ids = await workload(world)
    ARTIFACTS.mkdir(exist_ok=True)
    driver = await asyncio.to_thread(browser, tmp_path / "chromium-profile")
    try:
        url = f"{world.base}/dashboard#token={world.token('coord-county')}"
        await asyncio.to_thread(driver.get, url)
        card = '[data-centre="county-imaging"]'
        routine = f'{card} tr[data-kind="imaging"][data-priority="routine"]'

        def shown(d) -> bool:
            return bool(d.find_elements(By.CSS_SELECTOR, routine))
        await asyncio.to_thread(wait_page, driver, shown, "the county-imaging queue")
        # the token left the address bar at once
        assert "token" not in await asyncio.to_thread(lambda: driver.current_url)
        assert await asyncio.to_thread(text_of, driver, f"{routine} [data-col=waiting]") == "3"
        assert await asyncio.to_thread(text_of, driver, f"{routine} [data-col=in_progress]") == "2"
        urgent = f'{card} tr[data-kind="imaging"][data-priority="urgent"]'
        assert await asyncio.to_thread(text_of, driver, f"{urgent} [data-col=waiting]") == "1"
        risk_row = f'{card} tr.risk-at[data-request="{ids["urgent"]}"]'
        assert await asyncio.to_thread(lambda: len(driver.find_elements(By.CSS_SELECTOR, risk_row))) == 1
        assert await asyncio.to_thread(text_of, driver, f'{card} [data-kpi="at_risk"] b') == "1"
        assert await asyncio.to_thread(text_of, driver, f'{card} [data-kpi="signed_today"] b') == "1"
        assert await asyncio.to_thread(text_of, driver, f'{card} [data-reader="dr-wang"] [data-col=claimed]') == "1"
        assert await asyncio.to_thread(text_of, driver, f'{card} [data-reader="dr-wang"] [data-col=signed_today]') == "1"
        assert "webhook answered 503" in await asyncio.to_thread(text_of, driver, f'{card} [data-alert="dead-letter"]')
        assert ids["signed"] in await asyncio.to_thread(text_of, driver, f'{card} [data-alert="critical"]')
        assert "alarm" in await asyncio.to_thread(attribute_of, driver, card, "class")
        await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "monitor-dashboard-coordinator.png"))

        # live: the next request appears without a reload
        started = time.monotonic()
        await world.request(f"{CT}7", "cg-clinic")
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_element(
            By.CSS_SELECTOR, f"{routine} [data-col=waiting]").text == "4", "the new request")
        live_seconds = time.monotonic() - started
        assert live_seconds < 10
        print(f"dashboard updated {live_seconds:.2f} s after the request")

        # the admin sees every centre, the consortium and the sites
        await asyncio.to_thread(driver.get, "about:blank")
        await asyncio.to_thread(driver.get, f"{world.base}/dashboard#token={world.token('admin')}")
        await asyncio.to_thread(wait_page, driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-centre]")) == 4
                                and d.find_elements(By.CSS_SELECTOR, '[data-site="chengguan-thc"]'), "every centre")
        assert await asyncio.to_thread(text_of, driver, '[data-kpi="served_n"] b') == "1/3"
        await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "monitor-dashboard-admin.png"))

        # a clinic's token is refused with a clear message, and nothing is shown
        await asyncio.to_thread(driver.get, "about:blank")
        await asyncio.to_thread(driver.get, f"{world.base}/dashboard#token={world.token('cg-clinic')}")
        await asyncio.to_thread(wait_page, driver, lambda d: "clinic" in d.find_element(By.ID, "login-error").text,
                                "the refusal")
        assert not await asyncio.to_thread(lambda: driver.find_element(By.ID, "board").is_displayed())
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
    await wait_for(lambda: (ARTIFACTS / "monitor-dashboard-admin.png").exists(), timeout=5, what="the screenshot")


@pytest.mark.timeout(120)
async def test_dashboard_shows_consortium_local_times_in_a_utc_browser(world, tmp_path):
    """The urgent request's deadline, the update time and the trend's hours in Beijing time, with
    the zone in the header, although the browser's own zone is UTC; screenshots wide and phone-sized."""
    from selenium.webdriver.common.by import By
    ids = await workload(world)
    beijing = ZoneInfo("Asia/Shanghai")
    deadline = datetime.fromisoformat((await world.store.get("reading_requests", ids["urgent"]))["deadline"])
    now = datetime.fromtimestamp(world.clock(), beijing)
    assert deadline.astimezone(beijing).hour != deadline.hour  # the test means something
    ARTIFACTS.mkdir(exist_ok=True)
    driver = await asyncio.to_thread(browser, tmp_path / "chromium-profile")
    try:
        assert await asyncio.to_thread(driver.execute_script,
                                       "return Intl.DateTimeFormat().resolvedOptions().timeZone") in ("UTC", "Etc/UTC")
        await asyncio.to_thread(driver.get, f"{world.base}/dashboard#token={world.token('coord-county')}")
        card = '[data-centre="county-imaging"]'
        row = f'{card} tr.risk-at[data-request="{ids["urgent"]}"]'
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_elements(By.CSS_SELECTOR, row),
                                "the urgent request")
        assert await asyncio.to_thread(text_of, driver, "#clock") == "更新 updated " + now.strftime("%m/%d %H:%M")
        due = deadline.astimezone(beijing).strftime("%m/%d %H:%M")
        assert await asyncio.to_thread(text_of, driver, f"{row} [data-col=deadline]") == due
        assert await asyncio.to_thread(text_of, driver, "#zone") == "北京时间 UTC+8"
        assert await asyncio.to_thread(attribute_of, driver, "#zone", "title") == "Asia/Shanghai"
        # 24 local hours ending with the current one, labelled every 6 hours
        hours = await asyncio.to_thread(lambda: [e.text for e in driver.find_elements(
            By.CSS_SELECTOR, f'{card} svg.trend text[y="117"]')])
        assert hours == [f"{(now.hour - 23 + 6 * i) % 24}:00" for i in range(4)]
        for width, height in ((1366, 768), (390, 844)):  # a coordinator's laptop, a phone: the viewport exactly
            await asyncio.to_thread(driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700})
            await asyncio.to_thread(wait_page, driver, lambda d, w=width: d.execute_script(
                "return window.innerWidth") == w, f"a {width} px wide page")
            assert await asyncio.to_thread(lambda: driver.find_element(By.ID, "zone").is_displayed())
            await asyncio.to_thread(driver.save_screenshot,
                                    str(ARTIFACTS / f"monitor-dashboard-local-time-{width}x{height}.png"))
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
