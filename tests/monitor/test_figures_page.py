"""The figures page (/figures) in headless Chromium: after a scripted month it shows the month's
numbers at a glance (tiles, the sites' chart, turnaround, quality, coverage, the statement) for
the health commission, and only its own sites to a township.  Screenshots in ``test-artifacts/``."""

from __future__ import annotations

import asyncio
import random
import shutil

import pytest

from services.monitor.figure_views import FigureViews, Scope

from .test_dashboard import ARTIFACTS, CHROMEDRIVER, CHROMIUM, browser
from .test_figures_month import month_world, script, write_month  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
                                reason="Debian chromium and chromium-driver are not installed (make debs)")


def _wait(driver, script_: str, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script_))


def _look(driver, url: str, shot: str, size: tuple[int, int]) -> dict:
    driver.set_window_size(*size)
    driver.get("about:blank")  # a new page, not a fragment change of the last one
    driver.get(url)
    _wait(driver, "return document.body.dataset.loaded === '2026-11'")
    _wait(driver, "return document.querySelectorAll('#trend rect[data-month]').length === 12")
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / shot))
    return driver.execute_script("""
        const tile = (k) => document.querySelector(`[data-tile="${k}"] b`)?.textContent;
        return {readings: tile('readings'), on_time: tile('on_time'), a_rate: tile('a_rate'),
                coverage: tile('coverage'),
                sites: [...new Set([...document.querySelectorAll('#sites rect[data-site]')].map(r => r.dataset.site))],
                quality_rows: document.querySelectorAll('#quality tbody tr[data-site]').length,
                comments: document.querySelectorAll('#quality .comments li').length,
                statement: !document.getElementById('settlement-panel').hidden,
                overflowing: document.documentElement.scrollWidth > window.innerWidth + 1};""")


async def test_the_figures_page_reads_at_a_glance(month_world, tmp_path):
    world = month_world
    month = script(random.Random(7), n=300)
    await write_month(world, month)
    figures = await FigureViews(world.store, world.rt.consortium, world.rt.local_time).figures("2026-11", Scope())
    signed = sum(t["count"] for t in figures["turnaround"])
    on_time = sum(t["on_time"] for t in figures["turnaround"]) / signed
    driver = await asyncio.to_thread(browser, tmp_path / "profile")
    try:
        url = f"{world.base}/figures#month=2026-11&token={world.token('auditor')}"
        wide = await asyncio.to_thread(_look, driver, url, "figures-1366x768.png", (1366, 768))
        assert wide["readings"] == "300"
        assert wide["on_time"] == f"{100 * on_time:.1f}%"
        assert wide["coverage"] == "100.0%" and wide["statement"] and wide["quality_rows"] == len(figures["quality"])
        assert set(wide["sites"]) >= {"chengguan-thc", "lizhuang-vc"} and not wide["overflowing"]
        await asyncio.to_thread(driver.execute_script, "sessionStorage.clear()")
        phone = await asyncio.to_thread(_look, driver, url, "figures-390x844.png", (390, 844))
        assert phone["readings"] == "300" and not phone["overflowing"]
        # a township: its own sites (红庙 and the village clinic under it), its own statement lines
        await asyncio.to_thread(driver.execute_script, "sessionStorage.clear()")
        mine = await asyncio.to_thread(_look, driver, f"{world.base}/figures#month=2026-11&token="
                                       f"{world.token('hm-clinic')}", "figures-township-1366x768.png", (1366, 768))
        own = sum(s["readings"] for s in figures["readings"] if s["organization"] in ("hongmiao-thc", "lizhuang-vc"))
        assert mine["readings"] == str(own) and set(mine["sites"]) <= {"hongmiao-thc", "lizhuang-vc"}
        assert mine["comments"] > 0  # the readers' comments on its images
    finally:
        await asyncio.to_thread(driver.quit)
