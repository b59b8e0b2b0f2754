"""A coordinator signs in with his password and lands on the live dashboard, which runs on the
session cookie (no token pasted); 退出 ends the session on the server."""

from __future__ import annotations

import asyncio

import pytest

from services.core.sessions import SESSIONS

from ..monitor.conftest import start_world, stop_world
from .support import SIZES, browser, have_chromium, screenshot, set_password, sign_in, wait_page

pytestmark = pytest.mark.skipif(not have_chromium(), reason="Debian chromium and chromium-driver are not installed")


@pytest.mark.timeout(120)
async def test_a_coordinator_signs_in_to_the_dashboard_and_out(tmp_path):
    from selenium.webdriver.common.by import By
    world, services = await start_world(tmp_path)
    try:
        await set_password(world.rt, "coord-county")
        await world.add_study("1.2.826.0.1.500.1", "chengguan-thc", ["CT"])
        await world.settle()
        await world.request("1.2.826.0.1.500.1", "cg-clinic")
        await world.settle()
        driver = await asyncio.to_thread(browser, tmp_path / "profile", SIZES["desktop"])
        try:
            def work() -> None:
                sign_in(driver, world.base, "coord-county")
                wait_page(driver, lambda d: d.current_url.endswith("/dashboard")
                          and d.find_element(By.CSS_SELECTOR, '[data-centre="county-imaging"]'), "the dashboard")
                assert "县影像中心调度" in driver.find_element(By.ID, "who").text
                screenshot(driver, "coordinator-dashboard-desktop")
                driver.find_element(By.ID, "logout").click()
                wait_page(driver, lambda d: d.current_url.endswith("/signin"), "the sign-in page after 退出")
            await asyncio.to_thread(work)
        finally:
            await asyncio.to_thread(driver.quit)
        assert await world.store.find(SESSIONS, {"user": "coord-county"}) == []
    finally:
        await stop_world(world, services)
