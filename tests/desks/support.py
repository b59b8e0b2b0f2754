"""What desk tests share: set a user's password, sign in over HTTP or in the real ``/signin`` page,
and headless Chromium at the two sizes the desks are made for (docs/desks.md)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from services.core.passwords import set_password as _store_password
from services.core.runtime import Runtime
from services.core.sessions import COOKIE, CSRF_HEADER
from services.core.store.port import Store

from ..support import ROOT

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts" / "desks"
SIZES = {"desktop": "1366,768", "phone": "390,844"}
PASSWORD = "correct-horse-电池-staple"  # what tests give every user unless they need another


def have_chromium() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


async def set_password(runtime_or_store: Runtime | Store, user: str, password: str = PASSWORD) -> None:
    """Give ``user`` a desk password, as ``yilian user passwd`` does."""
    store = getattr(runtime_or_store, "store", runtime_or_store)
    await _store_password(store, user, password, now=time.time(), by="test")


@dataclass(frozen=True)
class DeskSession:
    """A signed-in session for HTTP tests: its cookie, CSRF token and ``POST /api/v1/session``'s body."""

    cookie: str
    csrf_token: str
    body: dict[str, Any]
    set_cookie: str  # the whole Set-Cookie header, for the flags

    @property
    def cookies(self) -> dict[str, str]:
        return {COOKIE: self.cookie}

    def headers(self, *, csrf: bool = True) -> dict[str, str]:
        """The Cookie header (and X-CSRF-Token) a browser would send; pass as ``headers=``."""
        headers = {"Cookie": f"{COOKIE}={self.cookie}"}
        if csrf:
            headers[CSRF_HEADER] = self.csrf_token
        return headers


async def session_cookie(base_url: str, user: str, password: str = PASSWORD) -> DeskSession:
    """Sign in through ``POST /api/v1/session``; raises AssertionError with the problem if refused."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.post(f"{base_url}/api/v1/session", json={"user": user, "password": password}) as resp:
            body = await resp.json()
            assert resp.status == 200, (resp.status, body)
            morsel = resp.cookies[COOKIE]
            return DeskSession(morsel.value, body["csrf_token"], body, resp.headers["Set-Cookie"])


def browser(profile: Path, size: str = SIZES["desktop"]):
    """Headless Chromium whose own zone is UTC (the pages must show the consortium's)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                f"--window-size={size}", f"--user-data-dir={profile}", "--lang=zh-CN"):
        options.add_argument(arg)
    if size == SIZES["phone"]:  # a desktop window is at least 500 px wide: a phone's viewport, emulated
        width, height = (int(n) for n in size.split(","))
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {
            "width": width, "height": height, "pixelRatio": 2, "touch": True}})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TZ": "UTC"})
    return webdriver.Chrome(service=service, options=options)


def wait_page(driver, condition, what: str, timeout: float = 20.0, *, shot: str = "desk-failure"):
    """Wait for ``condition(driver)``; on time-out save a screenshot and fail with the console."""
    import pytest
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                             ).until(condition)
    except TimeoutException:
        screenshot(driver, shot)
        console = "\n".join(e["message"] for e in driver.get_log("browser"))
        pytest.fail(f"page never showed {what} (at {driver.current_url}); console:\n{console}")


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def sign_in(driver, base_url: str, user: str, password: str = PASSWORD, *, next_path: str | None = None) -> None:
    """Sign in with the real ``/signin`` page (blocking: call through ``asyncio.to_thread``); returns
    once the browser has left it for the user's desk (or ``next_path``)."""
    from urllib.parse import quote

    from selenium.webdriver.common.by import By
    url = f"{base_url}/signin" + (f"?next={quote(next_path, safe='/')}" if next_path else "")
    driver.get(url)
    wait_page(driver, lambda d: d.find_element(By.ID, "signin-user").is_displayed(), "the sign-in form")
    driver.find_element(By.ID, "signin-user").clear()
    driver.find_element(By.ID, "signin-user").send_keys(user)
    driver.find_element(By.ID, "signin-password").send_keys(password)
    driver.find_element(By.ID, "signin-submit").click()

    def left(d) -> bool:
        error = d.find_element(By.ID, "signin-error").text if "/signin" in d.current_url else ""
        if error:
            raise AssertionError(f"sign-in of {user!r} refused: {error}")
        return "/signin" not in d.current_url
    wait_page(driver, left, f"{user}'s desk after signing in")
