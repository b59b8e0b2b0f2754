"""The reader's desk end to end, against a real ``yilian up`` and real headless Chromium.

A CT sent with DCMTK ``storescu`` and requested by its clinic appears on dr-wang's worklist
without a reload; one click claims it; OHIF (served at /viewer/) renders the CT — checked on the
screenshot's pixels in the viewport, and on the server's audit trail (OHIF's DICOMweb calls were
made as dr-wang, with the session cookie); a critical report is written (autosaved) and signed
with Ctrl+Enter.  Another clinic's study in the viewer is 404.  Screenshots at 1366×768 and
390×844 go to test-artifacts/desks/.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from services.api.viewer import install

from ..dicom_samples import STORESCU
from ..e2e.process import YilianProcess, yilian_command
from ..support import wait_for_sync
from .support import PASSWORD, SIZES, browser, have_chromium, screenshot, sign_in, wait_page

pytestmark = [
    pytest.mark.skipif(not have_chromium(), reason="Debian chromium and chromium-driver are not installed (make debs)"),
    pytest.mark.skipif(not install.is_current(install.default_dir()),
                       reason="the OHIF Viewer is not installed (make viewer)"),
]


class Server:
    def __init__(self, process: YilianProcess) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{process.http_port}"
        self._tokens: dict[str, str] = {}

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run([*yilian_command(), *args], input=stdin, capture_output=True, text=True,
                              env=self.process.env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def token(self, user: str) -> str:
        if user not in self._tokens:
            self._tokens[user] = self.cli("token", "--user", user).splitlines()[-1]
        return self._tokens[user]

    def call(self, method: str, path: str, user: str, body=None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token(user)}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def ct_file(directory: Path, *, patient_id: str) -> tuple[Path, str]:
    """pydicom's real 128×128 CT slice under new UIDs (a study of its own)."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID, ds.PatientName, ds.AccessionNumber = patient_id, "Zhang^San=张^三", "A" + patient_id
    path = directory / f"{patient_id}.dcm"
    ds.save_as(path)
    return path, ds.StudyInstanceUID


def send(server: Server, path: Path, calling: str) -> None:
    done = subprocess.run([STORESCU, "-aet", calling, "-aec", "YILIAN", "127.0.0.1", str(server.process.dicom_port),
                           str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def viewport_pixels(driver, png: bytes):
    """The pixels of OHIF's image canvas (inside the iframe) in a screenshot of the page."""
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    frame = driver.find_element(By.ID, "rd-viewer")
    fx, fy = frame.rect["x"], frame.rect["y"]
    driver.switch_to.frame(frame)
    try:
        canvases = [c for c in driver.find_elements(By.CSS_SELECTOR, "canvas") if c.rect["width"] > 100]
        assert canvases, "OHIF drew no canvas"
        r = max(canvases, key=lambda c: c.rect["width"] * c.rect["height"]).rect
    finally:
        driver.switch_to.default_content()
    scale = driver.execute_script("return window.devicePixelRatio") or 1
    image = Image.open(BytesIO(png)).convert("L")
    box = [int(v * scale) for v in (fx + r["x"], fy + r["y"], fx + r["x"] + r["width"], fy + r["y"] + r["height"])]
    return np.asarray(image.crop(box))


def rendered(driver) -> bool:
    """The viewport shows an image: many grey levels and real contrast, not one flat colour."""
    import numpy as np
    try:
        pixels = viewport_pixels(driver, driver.get_screenshot_as_png())
    except AssertionError:
        return False
    return len(np.unique(pixels)) > 40 and float(pixels.std()) > 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One ``yilian up`` for the module (a start, a password and a stop cost ~7 s): each test sends a
    study of a patient of its own and works only on the task it requested."""
    process = YilianProcess(tmp_path_factory.mktemp("reader-desk") / "data", YILIAN_STUDY_QUIET_SECONDS="1",
                            YILIAN_SSE_HEARTBEAT_SECONDS="5")
    try:
        process.start(timeout=60)
        s = Server(process)
        s.cli("user", "passwd", "dr-wang", "--stdin", stdin=PASSWORD + "\n")
        yield s
        process.terminate(timeout=30)
    finally:
        if process.alive():
            process.kill()


def test_a_reader_claims_reads_in_ohif_and_signs_a_critical_report(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    ours, uid = ct_file(tmp_path, patient_id="CG7001")
    theirs, other_uid = ct_file(tmp_path, patient_id="DB7002")
    send(server, theirs, "DB_DR1")  # dongba's study: never requested at county-imaging

    driver = browser(tmp_path / "profile", SIZES["desktop"])
    try:
        sign_in(driver, server.base, "dr-wang", next_path="/desk/reader")
        wait_page(driver, lambda d: d.find_element(By.ID, "rd-empty").is_displayed()
                  or d.find_elements(By.CSS_SELECTOR, ".rd-row"), "the worklist")
        wait_page(driver, lambda d: "rd-off" not in d.find_element(By.ID, "rd-live").get_attribute("class"),
                  "the live stream open")
        driver.execute_script("window.__notReloaded = true")

        # the clinic sends the CT and asks for a reading
        send(server, ours, "CG_CT1")
        wait_for_sync(lambda: server.call("GET", f"/api/v1/studies/{uid}", "cg-clinic")[0] == 200, timeout=30,
                      what="the CT indexed")
        status, created = server.call("POST", "/api/v1/reading-requests", "cg-clinic", {
            "study_uid": uid, "kind": "imaging", "priority": "urgent", "clinical_question": "胸痛，排除主动脉夹层",
            "green_channel": "胸痛", "signed_resident": True})
        assert status == 201, created
        rid = created["id"]
        row = f'.rd-row[data-id="{rid}"]'
        wait_page(driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the new task on the worklist", 10)
        seen = time.time()
        assert driver.execute_script("return window.__notReloaded === true"), "the page was reloaded"
        _, task = server.call("GET", f"/api/v1/reading-requests/{rid}", "dr-wang")
        queued = _epoch(task["queued_at"])
        latency = seen - queued
        print(f"reading.queued -> row on the desk: {latency:.3f} s")
        assert latency < 1.0, f"the task appeared {latency:.2f} s after reading.queued"
        text = driver.find_element(By.CSS_SELECTOR, row).text
        assert "加急" in text and "绿色通道" in text and "签约" in text and "chengguan-thc" in text and "CT" in text
        screenshot(driver, "reader-worklist-1366")

        # one click claims it; OHIF renders the CT beside the editor
        driver.find_element(By.CSS_SELECTOR, f"{row} .rd-claim").click()
        wait_page(driver, lambda d: d.find_element(By.ID, "rd-lease").text.startswith("租约"), "the lease shown")
        assert "/viewer/viewer?StudyInstanceUIDs=" + uid in driver.find_element(By.ID, "rd-viewer").get_attribute("src")
        wait_page(driver, rendered, "the CT rendered in OHIF's viewport", 90, shot="reader-ohif-failure")
        png = screenshot(driver, "reader-task-1366").read_bytes()
        pixels = viewport_pixels(driver, png)
        assert pixels.std() > 20.0 and pixels.min() < 40 and pixels.max() > 150

        # OHIF's QIDO/WADO calls reached Yilian as dr-wang (the session cookie, no token)
        def dicomweb_audit() -> list:
            status, found = server.call("GET", "/api/v1/audit?actor=dr-wang&limit=500", "auditor")
            assert status == 200, found
            return [r for r in found["items"] if r["action"].startswith("dicomweb.") and uid in json.dumps(r)]
        wait_for_sync(lambda: {"dicomweb.search", "dicomweb.metadata", "dicomweb.frames"}
                      <= {r["action"] for r in dicomweb_audit()},
                      timeout=10, what="OHIF's DICOMweb calls in the audit trail")

        # the report: template, text, critical finding; autosaved as typed; Ctrl+Enter signs
        from selenium.webdriver.support.ui import Select
        wait_page(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#rd-template option[value="head-ct-plain"]'),
                  "the CT templates offered")
        Select(driver.find_element(By.ID, "rd-template")).select_by_value("head-ct-plain")
        wait_page(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#rd-fields [data-field]"), "the template's fields")
        wait_page(driver, lambda d: d.find_element(By.ID, "rd-findings").get_attribute("value"), "the normal text")
        findings = driver.find_element(By.ID, "rd-findings")
        findings.clear()
        findings.send_keys("主动脉弓层面见内膜片，真假两腔。")
        driver.find_element(By.ID, "rd-impression").clear()
        driver.find_element(By.ID, "rd-impression").send_keys("主动脉夹层（Stanford A型）。")
        driver.find_element(By.ID, "rd-critical").click()
        driver.find_element(By.ID, "rd-critical-category").send_keys("主动脉夹层")
        wait_page(driver, lambda d: "草稿已保存" in d.find_element(By.ID, "rd-status").text, "the draft autosaved")
        _, held = server.call("GET", f"/api/v1/reading-requests/{rid}", "dr-wang")
        assert held["state"] == "draft" and held["draft"]["critical_category"] == "主动脉夹层"
        driver.find_element(By.ID, "rd-impression").send_keys(Keys.CONTROL, Keys.ENTER)
        wait_page(driver, lambda d: "已签发" in d.find_element(By.ID, "rd-status").text, "the report signed")
        _, done = server.call("GET", f"/api/v1/reading-requests/{rid}", "dr-wang")
        assert done["state"] == "signed"
        _, report = server.call("GET", f"/api/v1/reports/{done['report_id']}", "cg-clinic")
        assert report["critical"] is True and report["critical_category"] == "主动脉夹层"
        assert "内膜片" in report["findings"] and report["template_id"] == "head-ct-plain"
        wait_page(driver, lambda d: not d.find_element(By.ID, "rd-addendum").get_attribute("hidden"),
                  "the addendum box of a signed report")
        wait_page(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, row), "the signed task off the worklist")
        screenshot(driver, "reader-signed-1366")

        # another clinic's study: nothing, from the viewer's own origin with the session
        answer = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            Promise.all([fetch('/dicomweb/studies/' + arguments[0] + '/series', {credentials: 'same-origin'}),
                         fetch('/dicomweb/studies?StudyInstanceUID=' + arguments[0], {credentials: 'same-origin'})])
              .then(async ([a, b]) => done([a.status, await b.json()]));""", other_uid)
        assert answer == [404, []]
        driver.get(f"{server.base}/viewer/viewer?StudyInstanceUIDs={other_uid}")
        wait_page(driver, lambda d: d.execute_script("return document.readyState") == "complete", "the viewer page")
        assert any(r["outcome"] == "not_found" and other_uid in json.dumps(r) for r in
                   server.call("GET", "/api/v1/audit?actor=dr-wang&limit=500", "auditor")[1]["items"])
    finally:
        driver.quit()


def test_the_desk_on_a_phone(server, tmp_path):
    from selenium.webdriver.common.by import By
    path, uid = ct_file(tmp_path, patient_id="CG7101")
    send(server, path, "CG_CT1")
    wait_for_sync(lambda: server.call("GET", f"/api/v1/studies/{uid}", "cg-clinic")[0] == 200, timeout=30,
                  what="the CT indexed")
    status, created = server.call("POST", "/api/v1/reading-requests", "cg-clinic", {
        "study_uid": uid, "kind": "imaging", "priority": "stat", "clinical_question": "头痛呕吐"})
    assert status == 201, created
    driver = browser(tmp_path / "profile-phone", SIZES["phone"])
    try:
        sign_in(driver, server.base, "dr-wang", next_path="/desk/reader")
        row = f'.rd-row[data-id="{created["id"]}"]'
        wait_page(driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the task on a phone")
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        screenshot(driver, "reader-worklist-390")
        driver.find_element(By.CSS_SELECTOR, f"{row} .rd-claim").click()
        wait_page(driver, lambda d: d.find_element(By.ID, "rd-back").is_displayed(), "the task on a phone")
        wait_page(driver, rendered, "the CT rendered on a phone", 90, shot="reader-ohif-phone-failure")
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        screenshot(driver, "reader-task-390")
    finally:
        driver.quit()


def _epoch(iso: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_an_ecg_task_opens_the_12_lead_sheet_with_the_pre_read(server, tmp_path):
    from selenium.webdriver.common.by import By
    ds = dcmread(get_testdata_file("waveform_ecg.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID = "CG7201"
    path = tmp_path / "ecg.dcm"
    ds.save_as(path)
    send(server, path, "CG_ECG1")
    uid = ds.StudyInstanceUID
    wait_for_sync(lambda: server.call("GET", f"/api/v1/studies/{uid}", "cg-clinic")[0] == 200, timeout=30,
                  what="the ECG indexed")
    status, created = server.call("POST", "/api/v1/reading-requests", "cg-clinic", {
        "study_uid": uid, "kind": "ecg", "priority": "urgent", "clinical_question": "胸闷心悸"})
    assert status == 201, created
    server.cli("user", "passwd", "dr-zhao", "--stdin", stdin=PASSWORD + "\n")  # county ECG's reader
    driver = browser(tmp_path / "profile-ecg", SIZES["desktop"])
    try:
        sign_in(driver, server.base, "dr-zhao", next_path="/desk/reader")
        row = f'.rd-row[data-id="{created["id"]}"]'
        wait_page(driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the ECG task")
        driver.find_element(By.CSS_SELECTOR, f"{row} .rd-claim").click()
        wait_page(driver, lambda d: d.execute_script(
            "const i = document.querySelector('#rd-ecg img.rd-ecg-sheet'); return i && i.complete && i.naturalWidth > 0"),
            "the 12-lead sheet drawn")
        assert not driver.find_element(By.ID, "rd-ecg").get_attribute("hidden")
        assert driver.find_element(By.ID, "rd-viewer").get_attribute("hidden") is not None  # no OHIF for an ECG
        wait_page(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".rd-preread td"), "the measurements")
        preread = driver.find_element(By.CSS_SELECTOR, ".rd-preread").text
        assert "预判" in preread and "pre-read" in preread and "心率" in preread
        assert driver.find_element(By.ID, "rd-findings-label").text.startswith("心电图所见")
        screenshot(driver, "reader-ecg-1366")
    finally:
        driver.quit()
