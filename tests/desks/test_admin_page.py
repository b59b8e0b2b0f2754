"""The admin's desk in headless Chromium: the users table, creating a user, resetting a password
and disabling — each through /api/v1/users, checked in the store.  Screenshots at 1366×768 and 390×844."""

from __future__ import annotations

import asyncio

import pytest

from services.core.passwords import verify_password

from .support import SIZES, browser, have_chromium, screenshot, sign_in, wait_page

pytestmark = pytest.mark.skipif(not have_chromium(), reason="Debian chromium and chromium-driver are not installed")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_admin_creates_resets_and_disables_users(desk, tmp_path, size):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    driver = await asyncio.to_thread(browser, tmp_path / "profile", SIZES[size])
    row = '#users tr[data-user="{}"]'
    try:
        def work() -> None:
            sign_in(driver, desk.base, "admin")
            wait_page(driver, lambda d: d.current_url.endswith("/desk/admin")
                      and d.find_element(By.CSS_SELECTOR, row.format("dr-wang")), "the users table")
            assert "王建国" in driver.find_element(By.CSS_SELECTOR, row.format("dr-wang")).text
            screenshot(driver, f"admin-users-{size}")

            driver.find_element(By.ID, "user-new").click()
            driver.find_element(By.ID, "user-id").send_keys("dr-ma")
            driver.find_element(By.ID, "user-name").send_keys("马丽")
            Select(driver.find_element(By.ID, "user-role")).select_by_value("reader")
            Select(driver.find_element(By.ID, "user-org")).select_by_value("county-hospital")
            Select(driver.find_element(By.ID, "user-centre")).select_by_value("county-imaging")
            Select(driver.find_element(By.ID, "user-title")).select_by_value("主治医师")
            driver.find_element(By.ID, "user-password").send_keys("马丽的初始密码-2026")
            screenshot(driver, f"admin-new-user-{size}")
            driver.find_element(By.ID, "user-save").click()
            wait_page(driver, lambda d: "马丽" in d.find_element(By.CSS_SELECTOR, row.format("dr-ma")).text,
                      "the new user's row")

            driver.find_element(By.CSS_SELECTOR, row.format("dr-li") + ' button[data-act="password"]').click()
            driver.find_element(By.ID, "password-new").send_keys("李秀英的新密码-12")
            driver.find_element(By.ID, "password-again").send_keys("李秀英的新密码-12")
            driver.find_element(By.ID, "password-save").click()
            wait_page(driver, lambda d: "已重置" in d.find_element(By.ID, "users-message").text, "the reset message")

            driver.find_element(By.CSS_SELECTOR, row.format("dr-ma") + ' button[data-act="toggle"]').click()
            driver.switch_to.alert.accept()
            wait_page(driver, lambda d: "已停用" in d.find_element(By.CSS_SELECTOR, row.format("dr-ma")).text,
                      "dr-ma disabled")
            screenshot(driver, f"admin-disabled-{size}")
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= driver.execute_script("return window.innerWidth") + 1, "the page scrolls sideways"
        await asyncio.to_thread(work)
    finally:
        await asyncio.to_thread(driver.quit)
    ma = await desk.rt.store.get("users", "dr-ma")
    assert ma["role"] == "reader" and ma["centre"] == "county-imaging" and ma["disabled"] is True
    assert verify_password(ma["password_hash"], "马丽的初始密码-2026")
    li = await desk.rt.store.get("users", "dr-li")
    assert verify_password(li["password_hash"], "李秀英的新密码-12")
    actions = {r["action"] for r in await desk.rt.store.find("audit", {"actor": "admin"})}
    assert {"user.create", "user.password.reset", "user.disable"} <= actions
