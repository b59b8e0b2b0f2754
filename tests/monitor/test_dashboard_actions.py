"""The coordinator's actions on the live dashboard, in headless Chromium: assign a task to a reader,
move it to another centre, release a held lease, re-drive a dead-lettered delivery.  Each is
confirmed in a dialog, goes through the public API, is audited with the coordinator, and the
row changes with the next live snapshot (no reload).  Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from services.core.events import Event
from services.delivery import service as delivery

from ..support import wait_for
from .test_dashboard import ARTIFACTS, CT, browser, text_of, wait_page

pytestmark = pytest.mark.skipif(not (__import__("pathlib").Path("/usr/bin/chromium").exists()),
                                reason="Debian chromium is not installed (make debs)")

CARD = '[data-centre="county-imaging"]'


async def workload(world) -> dict[str, str]:
    """county-imaging: three queued CTs, one claimed by dr-wang; a signed report whose webhook
    delivery is dead-lettered."""
    for i in range(1, 6):
        await world.add_study(f"{CT}{i}", "chengguan-thc", ["CT"])
    await world.settle()
    rids = [(await world.request(f"{CT}{i}", "cg-clinic"))["id"] for i in range(1, 6)]
    await world.claim(rids[0], "dr-wang")
    await world.claim(rids[4], "dr-wang")
    signed = await world.sign(rids[4], "dr-wang")
    report = await world.store.get("reports", signed["report_id"])
    dead = {"id": "dl-webhook-1", "result_id": report["id"], "report_id": report["id"], "channel": "webhook",
            "organization": report["organization"], "centre": report["centre"], "critical": False,
            "target": "https://his.example/results", "state": "dead", "attempts": 8,
            "created_at": "2026-11-18T10:00:00.000Z", "next_attempt_at": None, "delivered_at": None,
            "dead_at": "2026-11-18T11:00:00.000Z", "reason": "webhook answered 503 for 24 h", "last_error": "503",
            "redrives": 0, "history": [], "version": 1}
    async with world.store.transaction() as tx:
        await tx.put(delivery.DELIVERIES, dead)
    await world.rt.bus.publish(Event("result.delivery_failed", subject=report["id"], source="/yilian/delivery", data={
        "result_id": report["id"], "report_id": report["id"], "organization": report["organization"],
        "centre": report["centre"], "study_uid": report["study_uid"], "critical": False, "delivery_id": dead["id"],
        "channel": "webhook", "attempts": 8, "reason": dead["reason"]}))
    await world.settle()
    return {"held": rids[0], "assign": rids[1], "move": rids[2], "delivery": dead["id"]}


def act(driver, css: str, choice: str | None = None, reason: str | None = None) -> None:
    """Click an action's button, fill the dialog and confirm."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    wait_page(driver, lambda d: d.find_element(By.CSS_SELECTOR, css).is_displayed(), css)
    for _ in range(10):  # a live re-render may replace the button between finding and clicking it
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            break
        except Exception:  # noqa: BLE001 - stale: look again
            continue
    wait_page(driver, lambda d: d.find_element(By.ID, "act").get_attribute("open") is not None, "the dialog")
    if choice is not None:
        Select(driver.find_element(By.ID, "act-choice")).select_by_value(choice)
    if reason is not None:
        driver.find_element(By.ID, "act-reason").send_keys(reason)
    driver.find_element(By.ID, "act-confirm").click()
    wait_page(driver, lambda d: d.find_element(By.ID, "act").get_attribute("open") is None, "the dialog to close")


async def audited(world, action: str, resource: str) -> dict:
    found = await world.store.find("audit", {"action": action, "resource": resource, "outcome": "success"})
    assert found, f"no successful {action} of {resource} in the audit log"
    return found[-1]


@pytest.mark.timeout(180)
async def test_coordinator_assigns_moves_releases_and_redrives_from_the_dashboard(world, tmp_path):
    from selenium.webdriver.common.by import By
    ids = await workload(world)
    ARTIFACTS.mkdir(exist_ok=True)
    driver = await asyncio.to_thread(browser, tmp_path / "chromium-profile")
    try:
        await asyncio.to_thread(driver.get, f"{world.base}/dashboard#token={world.token('coord-county')}")
        row = lambda rid: f'{CARD} tr[data-task="{rid}"]'  # noqa: E731
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_elements(By.CSS_SELECTOR, row(ids["held"])),
                                "the task list")
        assert await asyncio.to_thread(text_of, driver, f'{row(ids["held"])} [data-col=reader]') == "王建国"
        # a queued task offers assign and move, not release
        assert not await asyncio.to_thread(lambda: driver.find_elements(
            By.CSS_SELECTOR, f'{row(ids["assign"])} [data-action=release]'))
        await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "dashboard-actions-1366x768.png"))

        # assign a queued task to dr-li: the row shows her as the holder
        await asyncio.to_thread(act, driver, f'{row(ids["assign"])} [data-action=assign]', "dr-li", "王医生今日满负荷")
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_element(
            By.CSS_SELECTOR, f'{row(ids["assign"])} [data-col=reader]').text == "李秀英", "the assigned reader")
        doc = await world.store.get("reading_requests", ids["assign"])
        assert (doc["state"], doc["claimed_by"]) == ("claimed", "dr-li")
        entry = await audited(world, "reading.assign", f"reading/{ids['assign']}")
        assert entry["actor"] == "coord-county" and entry["detail"]["reason"] == "王医生今日满负荷"

        # release dr-wang's stuck lease: the task is queued again
        await asyncio.to_thread(act, driver, f'{row(ids["held"])} [data-action=release]')
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_element(
            By.CSS_SELECTOR, row(ids["held"])).get_attribute("data-state") == "queued", "the released task")
        assert (await world.store.get("reading_requests", ids["held"]))["claimed_by"] is None
        assert (await audited(world, "reading.release", f"reading/{ids['held']}"))["actor"] == "coord-county"

        # move a task to the city centre: it leaves this centre's list
        await asyncio.to_thread(act, driver, f'{row(ids["move"])} [data-action=move]', "city-imaging", "县中心积压")
        await asyncio.to_thread(wait_page, driver, lambda d: not d.find_elements(By.CSS_SELECTOR, row(ids["move"])),
                                "the moved task to leave the list")
        assert (await world.store.get("reading_requests", ids["move"]))["centre"] == "city-imaging"
        assert (await audited(world, "reading.move", f"reading/{ids['move']}"))["actor"] == "coord-county"

        # re-drive the dead letter: the delivery is pending again, the button gone
        redrive = f'{CARD} [data-alert="dead-letter"] [data-action=redrive][data-delivery="{ids["delivery"]}"]'
        await asyncio.to_thread(act, driver, redrive)
        await asyncio.to_thread(wait_page, driver, lambda d: not d.find_elements(By.CSS_SELECTOR, redrive),
                                "the re-drive button to go")
        d = await world.store.get(delivery.DELIVERIES, ids["delivery"])
        assert (d["state"], d["redrives"]) == ("pending", 1)
        entry = (await world.store.find("audit", {"action": "result.redrive"}))[-1]
        assert entry["actor"] == "coord-county" and entry["detail"]["delivery_id"] == ids["delivery"]

        # a refused action says why in the dialog and changes nothing (dr-chen reads for the city)
        await asyncio.to_thread(act_refused, driver, f'{row(ids["held"])} [data-action=assign]')
        assert (await world.store.get("reading_requests", ids["held"]))["state"] == "queued"

        await asyncio.to_thread(driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        await asyncio.to_thread(wait_page, driver, lambda d: d.execute_script("return window.innerWidth") == 390,
                                "a phone-sized page")
        await asyncio.to_thread(driver.execute_script, "document.querySelector('.tasks').scrollIntoView()")
        await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "dashboard-actions-390x844.png"))
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
    await wait_for(lambda: (ARTIFACTS / "dashboard-actions-390x844.png").exists(), timeout=5, what="the screenshot")


def act_refused(driver, css: str) -> None:
    """Assign with an empty reason: the API's 422 detail shows in the dialog, which stays open."""
    from selenium.webdriver.common.by import By
    driver.find_element(By.CSS_SELECTOR, css).click()
    wait_page(driver, lambda d: d.find_element(By.ID, "act").get_attribute("open") is not None, "the dialog")
    driver.execute_script("document.getElementById('act-reason').required = false")  # past the browser's check
    driver.find_element(By.ID, "act-reason").send_keys("   ")
    driver.find_element(By.ID, "act-confirm").click()
    wait_page(driver, lambda d: "reason" in d.find_element(By.ID, "act-error").text, "the refusal's detail")
    assert driver.find_element(By.ID, "act").get_attribute("open") is not None
    driver.find_element(By.ID, "act-cancel").click()


@pytest.mark.timeout(180)
async def test_a_coordinator_signed_in_with_a_password_reassigns_from_the_dashboard(world, tmp_path):
    """The desk's session instead of a token: /desk sends a coordinator to /dashboard, which streams
    and acts with the cookie and its CSRF token; sign-out ends the session on the server."""
    from selenium.webdriver.common.by import By

    from ..desks.support import screenshot, set_password, sign_in
    ids = await workload(world)
    await set_password(world.rt, "coord-county")
    driver = await asyncio.to_thread(browser, tmp_path / "chromium-profile")
    try:
        await asyncio.to_thread(sign_in, driver, world.base, "coord-county")
        row = f'{CARD} tr[data-task="{ids["held"]}"]'
        await asyncio.to_thread(wait_page, driver, lambda d: d.current_url.endswith("/dashboard")
                                and d.find_elements(By.CSS_SELECTOR, row), "the dashboard with the session")
        assert await asyncio.to_thread(lambda: driver.find_element(By.ID, "login").is_displayed()) is False
        # reassign dr-wang's task to dr-li: a POST with the cookie and X-CSRF-Token
        await asyncio.to_thread(act, driver, f"{row} [data-action=assign]", "dr-li", "王医生外出会诊")
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_element(
            By.CSS_SELECTOR, f"{row} [data-col=reader]").text == "李秀英", "the reassigned task")
        entry = await audited(world, "reading.assign", f"reading/{ids['held']}")
        assert (entry["actor"], entry["detail"]["previous_holder"]) == ("coord-county", "dr-wang")
        await asyncio.to_thread(screenshot, driver, "coordinator-dashboard-1366x768")
        await asyncio.to_thread(driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        await asyncio.to_thread(wait_page, driver, lambda d: d.execute_script("return window.innerWidth") == 390,
                                "a phone-sized page")
        await asyncio.to_thread(driver.execute_script, "document.querySelector('.tasks').scrollIntoView()")
        await asyncio.to_thread(screenshot, driver, "coordinator-dashboard-390x844")
        # sign out: back to /signin, and the session is gone on the server
        await asyncio.to_thread(lambda: driver.find_element(By.ID, "logout").click())
        await asyncio.to_thread(wait_page, driver, lambda d: "/signin" in d.current_url, "the sign-in page")
        status = await asyncio.to_thread(driver.execute_async_script, """
            const done = arguments[arguments.length - 1];
            fetch('/api/v1/session', {credentials: 'same-origin'}).then((r) => done(r.status));""")
        assert status == 401
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
