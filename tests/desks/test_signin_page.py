"""The sign-in page in headless Chromium: a refusal shown in place, the way on to the page that
was asked for, the shared header (name, organisation, 退出) and sign-out.  Screenshots at
1366×768 and 390×844 in test-artifacts/desks/."""

from __future__ import annotations

import asyncio

import pytest

from .support import SIZES, browser, have_chromium, screenshot, set_password, sign_in, wait_page

pytestmark = pytest.mark.skipif(not have_chromium(), reason="Debian chromium and chromium-driver are not installed")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_sign_in_page_refuses_then_signs_in_and_out(desk, tmp_path, size):
    from selenium.webdriver.common.by import By
    await set_password(desk.rt, "auditor")
    driver = await asyncio.to_thread(browser, tmp_path / "profile", SIZES[size])
    try:
        def refused() -> None:
            driver.get(f"{desk.base}/desk")  # no session: to /signin?next=/desk
            wait_page(driver, lambda d: "/signin?next=" in d.current_url and d.find_element(By.ID, "signin-user"),
                      "the sign-in page")
            driver.find_element(By.ID, "signin-user").send_keys("auditor")
            driver.find_element(By.ID, "signin-password").send_keys("not-the-password")
            driver.find_element(By.ID, "signin-submit").click()
            wait_page(driver, lambda d: "用户名或密码错误" in d.find_element(By.ID, "signin-error").text,
                      "the refusal")
            screenshot(driver, f"signin-refused-{size}")
        await asyncio.to_thread(refused)

        await asyncio.to_thread(sign_in, driver, desk.base, "auditor", next_path="/desk")

        def header() -> None:
            wait_page(driver, lambda d: d.find_element(By.ID, "desk-name").text == "卫健局审计员",
                      "the user's name in the header")
            assert driver.find_element(By.ID, "desk-org").text == "示范县人民医院"
            assert driver.execute_script("return document.cookie") == ""  # HttpOnly: no script reads it
            screenshot(driver, f"desk-header-{size}")
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= driver.execute_script("return window.innerWidth"), "the page scrolls sideways"
            driver.find_element(By.ID, "desk-signout").click()
            wait_page(driver, lambda d: d.current_url.endswith("/signin"), "the sign-in page after 退出")
            driver.get(f"{desk.base}/desk")
            wait_page(driver, lambda d: "/signin?next=" in d.current_url, "the sign-in page again")
        await asyncio.to_thread(header)
    finally:
        await asyncio.to_thread(driver.quit)
