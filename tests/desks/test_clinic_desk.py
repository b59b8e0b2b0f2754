"""The clinic's desk end to end, in headless Chromium against a whole Yilian (gateway, workflow, api,
delivery to the clinic's DICOM terminal): a clinic signs in, sends a study with DCMTK storescu, sees it
arrive, requests a reading; a reader signs a critical report (through the API); the result appears
without a reload, stands out, opens as printed (the signed PDF), and is acknowledged from the desk by
the person signed in.  Another clinic's desk shows none of it.  Screenshots in test-artifacts/desks/."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from ..delivery.conftest import clinic_scp, make_yilian  # noqa: F401 - fixtures
from .support import SIZES, browser, have_chromium, screenshot, set_password, sign_in, wait_page

pytestmark = [pytest.mark.skipif(not have_chromium(), reason="Debian chromium and chromium-driver are not installed"),
              pytest.mark.dcmtk]


def text(driver, css: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    for _ in range(20):  # a live reload may replace the element between finding and reading it
        try:
            return driver.find_element(By.CSS_SELECTOR, css).text
        except StaleElementReferenceException:
            continue
    return driver.find_element(By.CSS_SELECTOR, css).text


def click(driver, css: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    wait_page(driver, lambda d: d.find_element(By.CSS_SELECTOR, css).is_displayed(), css)
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            continue


def request_reading(driver, study_uid: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    click(driver, f'button[data-request="{study_uid}"]')
    wait_page(driver, lambda d: d.find_element(By.ID, "request-dialog").get_attribute("open") is not None, "the form")
    driver.find_element(By.ID, "request-question").send_keys("胸痛两小时，排除气胸")
    Select(driver.find_element(By.ID, "request-priority")).select_by_value("urgent")
    Select(driver.find_element(By.ID, "request-green")).select_by_value("胸痛")
    driver.find_element(By.ID, "request-resident").click()
    driver.find_element(By.ID, "request-submit").click()
    wait_page(driver, lambda d: d.find_element(By.ID, "request-dialog").get_attribute("open") is None,
              "the request sent")


@pytest.mark.timeout(240)
async def test_a_clinic_sends_requests_and_acknowledges_a_critical_result_from_its_desk(
        make_yilian, clinic_scp, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    clinic_scp.start()
    y = await make_yilian(scp_port=clinic_scp.port)
    for user in ("cg-clinic", "db-clinic"):
        await set_password(y.rt, user)
    driver = await asyncio.to_thread(browser, tmp_path / "chromium-cg")
    try:
        await asyncio.to_thread(sign_in, driver, y.base, "cg-clinic")
        await asyncio.to_thread(wait_page, driver, lambda d: d.current_url.endswith("/desk/clinic")
                                and d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true",
                                "the clinic's desk")
        assert "城关镇卫生院放射科" in await asyncio.to_thread(text, driver, "#desk-name")

        # the modality sends a study (DCMTK storescu into the gateway); the desk shows it arrived
        study_uid = await y.send_study(patient_id="CG-2026-7", patient_name="刘^芳", charset="ISO_IR 192")
        await asyncio.to_thread(click, driver, "#studies-refresh")
        row = f'#studies tr[data-study="{study_uid}"]'
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the study")
        assert "已接收" in await asyncio.to_thread(text, driver, f"{row} [data-col=state]")

        # request a reading: question, priority, green channel, signed resident
        await asyncio.to_thread(request_reading, driver, study_uid)
        await asyncio.to_thread(wait_page, driver, lambda d: "阅片中" in d.find_element(
            By.CSS_SELECTOR, f"{row} [data-col=state]").text, "the request in reading")
        [request] = await y.rt.store.find("reading_requests", {"study_uid": study_uid})
        assert (request["priority"], request["green_channel"], request["signed_resident"], request["requested_by"]) \
            == ("urgent", "胸痛", True, "cg-clinic")
        assert request["clinical_question"] == "胸痛两小时，排除气胸"

        # a reader signs a critical report: it appears without a reload, and stands out
        await y.ok("POST", f"/api/v1/reading-requests/{request['id']}/claim", "dr-wang", {})
        signed = await y.ok("POST", f"/api/v1/reading-requests/{request['id']}/sign", "dr-wang", {
            "findings": "右侧胸腔见无肺纹理透亮区，肺组织压缩约40%。", "impression": "右侧气胸，建议立即处理。",
            "critical": True, "critical_category": "张力性气胸"})
        result_id = signed["report_id"]
        result_row = f'#results tr[data-result="{result_id}"]'
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_elements(By.CSS_SELECTOR, result_row),
                                "the result, live", 30)
        assert "critical" in await asyncio.to_thread(
            lambda: driver.find_element(By.CSS_SELECTOR, result_row).get_attribute("class"))
        assert "张力性气胸" in await asyncio.to_thread(text, driver, "#critical-banner")
        await asyncio.to_thread(screenshot, driver, "clinic-critical-1366x768")

        # the report as printed: the signed PDF the terminal got
        await y.delivered(result_id)
        await asyncio.to_thread(click, driver, f'{result_row} button[data-open]')
        await asyncio.to_thread(wait_page, driver, lambda d: d.find_element(By.ID, "report-dialog")
                                .get_attribute("open") is not None, "the report")
        assert "右侧气胸" in await asyncio.to_thread(text, driver, "#report-body")
        pdf = await asyncio.to_thread(driver.execute_async_script, """
            const done = arguments[arguments.length - 1];
            fetch(document.getElementById('report-pdf').href, {credentials: 'same-origin'})
              .then(async (r) => done([r.status, r.headers.get('Content-Type'), (await r.arrayBuffer()).byteLength]));""")
        assert pdf[0] == 200 and pdf[1] == "application/pdf" and pdf[2] > 10_000, pdf
        await asyncio.to_thread(screenshot, driver, "clinic-report-1366x768")

        # acknowledged from the desk, by the person signed in
        await asyncio.to_thread(lambda: driver.find_element(By.ID, "ack-note").send_keys("已电话通知患者家属"))
        await asyncio.to_thread(click, driver, "#report-ack")
        await asyncio.to_thread(wait_page, driver, lambda d: "已确认" in d.find_element(
            By.CSS_SELECTOR, f"{result_row} [data-col=state]").text, "the acknowledgement")
        assert await asyncio.to_thread(lambda: driver.find_element(By.ID, "critical-banner").is_displayed()) is False
        result = await y.rt.store.get("results", result_id)
        assert result["acknowledged_by"] == "cg-clinic" and result["acknowledgement"]["mode"] == "person"
        assert result["acknowledgement"]["note"] == "已电话通知患者家属"
        [ack] = await y.rt.store.find("audit", {"action": "result.acknowledge", "resource": f"result/{result_id}"})
        assert ack["actor"] == "cg-clinic"
        assert "城关镇卫生院放射科 (cg-clinic)" in await asyncio.to_thread(text, driver, "#report-body")
        await asyncio.to_thread(click, driver, "#report-close")
        await asyncio.to_thread(screenshot, driver, "clinic-desk-1366x768")
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(tmp_path / "chromium-cg", ignore_errors=True)

    # on a phone
    phone = await asyncio.to_thread(browser, tmp_path / "chromium-phone", SIZES["phone"])
    try:
        await asyncio.to_thread(sign_in, phone, y.base, "cg-clinic")
        await asyncio.to_thread(wait_page, phone, lambda d: d.find_elements(
            By.CSS_SELECTOR, f'#results tr[data-result="{result_id}"]'), "the results on a phone")
        assert await asyncio.to_thread(phone.execute_script, "return window.innerWidth") == 390
        await asyncio.to_thread(screenshot, phone, "clinic-desk-390x844")
    finally:
        await asyncio.to_thread(phone.quit)
        shutil.rmtree(tmp_path / "chromium-phone", ignore_errors=True)

    # another clinic's desk: none of it
    other = await asyncio.to_thread(browser, tmp_path / "chromium-db")
    try:
        await asyncio.to_thread(sign_in, other, y.base, "db-clinic")
        await asyncio.to_thread(wait_page, other, lambda d: d.find_element(By.TAG_NAME, "body")
                                .get_attribute("data-ready") == "true", "the other clinic's desk")
        page = await asyncio.to_thread(lambda: other.find_element(By.TAG_NAME, "body").text)
        assert "CG-2026-7" not in page and "刘" not in page and "气胸" not in page
        assert not await asyncio.to_thread(lambda: other.find_elements(By.CSS_SELECTOR, "tr[data-result]"))
        got = await asyncio.to_thread(other.execute_async_script, f"""
            const done = arguments[arguments.length - 1];
            Promise.all(['/api/v1/results/{result_id}', '/api/v1/results/{result_id}/pdf']
              .map((p) => fetch(p, {{credentials: 'same-origin'}}).then((r) => r.status))).then(done);""")
        assert got == [404, 404]
    finally:
        await asyncio.to_thread(other.quit)
        shutil.rmtree(tmp_path / "chromium-db", ignore_errors=True)
