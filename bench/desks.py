"""The reader's desk on loopback with 10,000 open tasks: time to a usable worklist page and to
the first image in OHIF (docs/performance.md).

``python -m bench desks [--tasks 10000] [--runs 3]``: seeds the tasks (as ``bench worklist``
does), starts ``yilian up``, sends one real CT with DCMTK ``storescu`` and asks for a STAT reading
of it, then drives headless Chromium as dr-wang:

* **worklist page**: navigation start → the first rows drawn (``performance.mark('rd-worklist-shown')``
  in ``reader.js``, after ``GET /api/v1/worklist`` answered and the rows are in the page);
* **first image**: the click on 领取/打开 → OHIF's viewport shows the CT (a screenshot's pixels,
  as the test checks; polled, so the figure is up to one screenshot, ~0.1-0.3 s, late).
The first run is cold (empty browser cache: OHIF's 40 MB of scripts), the others warm.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from .worklist import EXAMPLE, OUT, ROOT, STORESCU, Server, server_env

PASSWORD = "bench-desk-" + "p" * 12
# the county centre's worklist is long: the router may overflow the CT to the city's (its SLA rule)
READERS = {"county-imaging": "dr-wang", "city-imaging": "dr-chen"}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench desks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 tasks, 2 runs")
    p.add_argument("--tasks", type=int, default=None, help="open tasks to seed (default 10000)")
    p.add_argument("--runs", type=int, default=None, help="page loads and task openings (default 3)")
    p.add_argument("--out", type=Path, default=OUT / "desks.json")
    p.add_argument("--seeded", metavar="DIR", type=Path, help="the data directory of an earlier run (seeding "
                   "10,000 tasks takes minutes); its tasks are kept, a new CT is sent")
    args = p.parse_args(argv)
    tasks = args.tasks or (1000 if args.quick else 10_000)
    runs = args.runs or (2 if args.quick else 3)

    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from services.core.auth import issue_token
    from services.core.consortium import load_consortium
    from tests.desks.support import browser, sign_in
    from tests.desks.test_reader_desk import rendered

    from .peers import free_port

    tmp = Path(tempfile.mkdtemp(prefix="yilian-bench-desks-"))
    data = args.seeded or tmp / "data"
    secret = secrets.token_urlsafe(32)
    http, dicom = free_port(), free_port()
    env = server_env(data, EXAMPLE, secret, http, dicom)
    results: dict[str, Any] = {"setup": {"tasks": tasks, "runs": runs, "cores": os.cpu_count()}}
    if args.seeded:
        db = sqlite3.connect(data / "yilian.db")
        results["seed"] = {"reused": str(data), "open_tasks": dict(db.execute(
            "SELECT json_extract(doc, '$.centre'), count(*) FROM c_reading_requests "
            "WHERE json_extract(doc, '$.on_worklist') GROUP BY 1").fetchall())}
        db.close()
    else:
        print(f"seeding {tasks} open tasks ...", flush=True)
        seed_env = {**env, "YILIAN_STORE_URL": f"sqlite:///{data}/yilian.db?synchronous=NORMAL"}
        out = subprocess.run([sys.executable, "-m", "bench.worklist", "--seed-only", str(tasks)], env=seed_env,
                             cwd=ROOT, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        results["seed"] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"seeded: {results['seed']}", flush=True)
    for user in READERS.values():
        subprocess.run([sys.executable, "-m", "services.cli", "user", "passwd", user, "--stdin"], env=env, cwd=ROOT,
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)

    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ct = tmp / "ct.dcm"
    ds.save_as(ct)
    consortium = load_consortium(EXAMPLE)
    clinic = issue_token(consortium, "cg-clinic", secret)
    base = f"http://127.0.0.1:{http}"

    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {clinic}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None

    server = Server(env, tmp / "server.log")
    server.start()
    driver = None
    try:
        subprocess.run([STORESCU, "-aet", "CG_CT1", "-aec", "YILIAN", "127.0.0.1", str(dicom), str(ct)], check=True,
                       capture_output=True, timeout=60)
        deadline = time.time() + 60
        while call("GET", f"/api/v1/studies/{ds.StudyInstanceUID}")[0] != 200:
            if time.time() > deadline:
                raise RuntimeError("the CT was not indexed in 60 s")
            time.sleep(0.2)
        status, created = call("POST", "/api/v1/reading-requests", {
            "study_uid": ds.StudyInstanceUID, "kind": "imaging", "priority": "stat", "clinical_question": "bench"})
        assert status == 201, created
        rid = created["id"]
        while not (call("GET", f"/api/v1/reading-requests/{rid}")[1] or {}).get("centre"):
            time.sleep(0.2)  # routed
        centre = call("GET", f"/api/v1/reading-requests/{rid}")[1]["centre"]
        reader = READERS[centre]
        results["setup"].update(centre=centre, reader=reader)
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import Select, WebDriverWait
        driver = browser(tmp / "profile")
        sign_in(driver, base, reader, PASSWORD, next_path="/desk/reader")
        results["load_before"] = _load()
        pages, images, ohif = [], [], {}
        for i in range(runs):
            driver.get(base + "/desk/reader")
            WebDriverWait(driver, 60, 0.05).until(
                lambda d: d.execute_script("return performance.getEntriesByName('rd-worklist-shown').length"))
            pages.append(round(driver.execute_script(
                "return performance.getEntriesByName('rd-worklist-shown')[0].startTime"), 1))
            rows = driver.execute_script("return document.querySelectorAll('.rd-row').length")
            # the CT among ~30 older STAT CTs of the seed: the reader filters to find it
            Select(driver.find_element(By.ID, "f-priority")).select_by_value("stat")
            driver.find_element(By.ID, "f-modality").send_keys("CT")
            button = WebDriverWait(driver, 30, 0.05).until(
                lambda d: d.find_element(By.CSS_SELECTOR, f'.rd-row[data-id="{rid}"] button'))
            t0 = time.perf_counter()
            button.click()
            WebDriverWait(driver, 120, 0.05).until(rendered)
            images.append(round((time.perf_counter() - t0) * 1000, 1))
            # OHIF's own timers (its console): boot of its scripts to the viewer, and study to first image
            logged = " ".join(e["message"] for e in driver.get_log("browser"))
            for name in ("scriptToView", "studyToFirstImage"):
                found = re.findall(name + r': ([0-9.]+) ms', logged)
                ohif.setdefault(name, []).append(round(float(found[-1]), 1) if found else None)
            print(f"run {i + 1}: worklist page {pages[-1]} ms ({rows} rows shown), first image {images[-1]} ms "
                  f"(OHIF: {ohif})", flush=True)
            driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        results["load_after"] = _load()
        results["worklist_page_ms"] = {"runs": pages, "median": statistics.median(pages)}
        results["first_image_ms"] = {"runs": images, "cold": images[0], "warm_median": statistics.median(images[1:])
                                     if len(images) > 1 else None, "ohif_console_ms": ohif}
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
    OUT.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1))
    print(json.dumps(results, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
