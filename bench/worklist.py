"""Reading-workflow benchmark (issue 4): worklist latency under 50 readers, and study.received -> worklist.

``yilian up`` runs as a subprocess on the embedded default (SQLite synchronous=FULL, in-process
bus, every worklist read audited and committed before its answer).  Before it starts, a seeding
subprocess fills a fresh data dir the way the code does: studies as the PACS gateway indexes and
announces them (``pacs_gateway.model.study_doc``), then one ``RequestReading`` command per study
through ``workflow.service.execute`` (routing, SLA-aware overflow, audit, events), so the
worklists hold N open tasks spread over the county and city centres.

This process is the client (aiohttp over loopback, one token per reader).  On a 2-core box
client and server share the cores; the client does as little as it can (bodies are read but
parsed only when a reader decides to claim).  Load models:

* **realistic**: every reader refreshes his worklist every 1 s (jittered 0.5-1.5 s) and now and
  then (2 %) claims a queued task and signs it; meanwhile a township's DR (or, with
  ``--arrival-kind ecg``, a village ECG cart) C-STOREs ~300 new studies (DCMTK ``storescu``, one
  association each) that a site rule of the example consortium turns into reading requests.
  Before it, a warm-up does each path once (first imports, first PDF/SR, first association).
* **saturation**: the same readers in a closed loop (next request as soon as the answer came).
* **single**: one reader, closed loop (the unloaded latency).

study.received -> worklist is measured twice per study: ``queued`` = the ``reading.queued``
event's time minus the ``study.received`` event's time (both stamped by the server inside the
transactions that commit them; read from the event log afterwards); ``visible`` = the moment a
watcher (polling the tail of the centres' worklists filtered by that clinic every 200 ms) first
got a response listing the task, minus the ``study.received`` time.  The gateway's quiet period
(``YILIAN_STUDY_QUIET_SECONDS``) happens before ``study.received`` and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
STORESCU = "/usr/bin/storescu"
EXAMPLE = ROOT / "deploy" / "consortium.example.yaml"

# Seeded studies come from these clinics; hongmiao-thc and zhangzhuang-vc are kept for the measured
# arrivals, so a worklist filtered by their origin lists only those.
SEED_CLINICS = {"chengguan-thc": "cg-clinic", "dongba-thc": "db-clinic", "lizhuang-vc": "lz-clinic"}
# Arrivals, each turned into a request by a site rule of the example consortium:
# "every DX from this township" (default) or "every ECG from this village clinic".
ARRIVALS = {"dx": ("hongmiao-thc", "HM_DR1", ("county-imaging", "city-imaging")),
            "ecg": ("zhangzhuang-vc", "ZZ_ECG1", ("county-ecg", "city-ecg"))}
# 50 readers over the four centres, roughly as a county consortium staffs them.
READERS_PER_CENTRE = {"county-imaging": 20, "county-ecg": 10, "city-imaging": 12, "city-ecg": 8}
WATCHERS = {f"bench-watch-{centre}": centre for centre in READERS_PER_CENTRE}
CENTRE_ORG = {"county-imaging": "county-hospital", "county-ecg": "county-hospital",
              "city-imaging": "city-hospital", "city-ecg": "city-hospital"}


# --- setup ---------------------------------------------------------------------------------

def write_consortium(path: Path, readers: int) -> list[str]:
    """The example consortium plus ``readers`` on-duty bench readers and two off-duty watchers."""
    import yaml
    doc = yaml.safe_load(EXAMPLE.read_text())
    ids: list[str] = []
    total = sum(READERS_PER_CENTRE.values())
    for centre, n in READERS_PER_CENTRE.items():
        for i in range(max(1, round(n * readers / total))):
            uid = f"bench-{centre}-{i + 1:02d}"
            ids.append(uid)
            doc["users"].append({"id": uid, "name": f"读片医生{len(ids):02d}", "role": "reader",
                                 "organization": CENTRE_ORG[centre], "centre": centre, "on_duty": True})
    for uid, centre in WATCHERS.items():
        doc["users"].append({"id": uid, "name": "到达观察", "role": "reader", "organization": CENTRE_ORG[centre],
                             "centre": centre, "on_duty": False})
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return ids[:readers] if len(ids) >= readers else ids


def server_env(data: Path, consortium: Path, secret: str, http: int, dicom: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_")}
    env.update(YILIAN_DATA_DIR=str(data), YILIAN_CONSORTIUM=str(consortium), YILIAN_JWT_SECRET=secret,
               YILIAN_HTTP_PORT=str(http), YILIAN_DICOM_PORT=str(dicom), YILIAN_BIND_HOST="127.0.0.1",
               YILIAN_LOG_LEVEL="WARNING", YILIAN_STUDY_QUIET_SECONDS="1", TCP_NODELAY="1")
    return env


async def seed(tasks: int, seed_value: int = 4) -> dict[str, Any]:
    """Runs in the seeding subprocess (its environment names the data dir)."""
    from services.core.auth import Principal
    from services.core.runtime import build_runtime
    from services.core.settings import Settings
    from services.pacs_gateway import model as gw
    from services.workflow import commands as c
    from services.workflow.service import execute

    rng = random.Random(seed_value)
    rt = await build_runtime(Settings.from_env())
    users = rt.consortium.users
    clinics = {org: Principal(uid, "clinic", org, None, "seed") for org, uid in SEED_CLINICS.items()
               if uid in users}
    t0 = time.perf_counter()
    plan: list[tuple[str, str, str]] = []  # (study_uid, organization, kind)
    batch = 500
    for start in range(0, tasks, batch):
        async with rt.store.transaction() as tx:
            for i in range(start, min(tasks, start + batch)):
                org = rng.choice(list(clinics))
                kind = "ecg" if rng.random() < 0.3 else "imaging"
                modality = "ECG" if kind == "ecg" else rng.choice(["DX", "DX", "CR", "US", "CT"])
                uid = f"1.2.826.0.1.3680043.10.1234.{seed_value}.{i + 1}"
                header = gw.InstanceHeader(
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1", sop_instance_uid=f"{uid}.1.1",
                    study_uid=uid, series_uid=f"{uid}.1", patient_id=f"P{i % 4000:06d}",
                    patient_name=rng.choice(["张^伟", "王^芳", "李^娜", "刘^洋", "陈^静", "杨^磊"]),
                    sex=rng.choice("MF"), study_date="20261123", accession_number=f"A{i + 1:07d}",
                    study_description={"ECG": "常规十二导联心电图", "DX": "胸部正位", "CR": "腰椎侧位",
                                       "US": "腹部超声", "CT": "头颅平扫"}[modality], modality=modality)
                now = _now()
                study = gw.study_doc(None, header, organization=org, added=1, new_series=True, now=now)
                study.update(state="received", revision=1)  # as the announcer leaves it
                await tx.put("studies", study)
                patient = await tx.get("patients", gw.patient_id_of(org, header.patient_id))
                await tx.put("patients", gw.patient_doc(patient, header, organization=org, new_study=True))
                plan.append((uid, org, kind))
    studies_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for uid, org, kind in plan:
        r = rng.random()
        priority = "stat" if r < 0.05 else "urgent" if r < 0.25 else "routine"
        await execute(rt, c.RequestReading(
            study_uid=uid, kind=kind, priority=priority, clinical_question="请阅片",
            green_channel=rng.choice(["胸痛", "卒中"]) if rng.random() < 0.03 else None,
            signed_resident=rng.random() < 0.3), actor=clinics[org])
    requests_s = time.perf_counter() - t1
    per_centre: dict[str, int] = {}
    for centre in rt.consortium.centres:
        per_centre[centre] = await rt.store.count("reading_requests", {"centre": centre, "on_worklist": True})
    await rt.store.close()
    return {"studies_seconds": round(studies_s, 1), "requests_seconds": round(requests_s, 1),
            "open_tasks": per_centre}


def _now() -> str:
    from services.core.events import utc_now
    return utc_now()


def make_arrivals(directory: Path, n: int, kind: str) -> list[Path]:
    """``n`` one-instance studies: 512x512 DX images, or 12-lead ECGs (pydicom's real waveform)."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

    from .corpus import _image
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    if kind == "dx":
        rng = np.random.default_rng(4)
        for i in range(n):
            path = directory / f"dx{i:04d}.dcm"
            _image(path, sop_class=DigitalXRayImageStorageForPresentation, modality="DX", study=generate_uid(),
                   series=generate_uid(), number=i + 1, rows=512, cols=512, patient=(f"HM{i:05d}", "Zhao^Qiang"),
                   rng=rng)
            files.append(path)
        return files
    src = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    for i in range(n):
        ds = src.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.AccessionNumber = f"ZZ{i:05d}", f"ZZA{i:05d}"
        path = directory / f"ecg{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


class Server:
    def __init__(self, env: dict[str, str], log: Path, *, profile: Path | None = None) -> None:
        self.env, self.log_path, self.profile = env, log, profile
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60) -> dict[str, Any]:
        cmd = [sys.executable, *(["-m", "cProfile", "-o", str(self.profile)] if self.profile else []),
               "-m", "services.cli", "up"]
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True)
        ready: dict[str, Any] = {}

        def read() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                if line.startswith("{") and '"ready"' in line:
                    ready.update(json.loads(line))
                    return
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not ready:
            self.stop()
            raise RuntimeError(f"yilian up not ready in {timeout}s; see {self.log_path}")
        return ready

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- load ----------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def summary(values_ms: list[float], seconds: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(values_ms)}
    if values_ms:
        out.update(p50=round(pct(values_ms, 50), 1), p95=round(pct(values_ms, 95), 1),
                   p99=round(pct(values_ms, 99), 1), max=round(max(values_ms), 1),
                   mean=round(statistics.fmean(values_ms), 1))
    if seconds:
        out["per_second"] = round(len(values_ms) / seconds, 1)
    return out


class Load:
    def __init__(self, base: str, tokens: dict[str, str]) -> None:
        self.base, self.tokens = base, tokens
        self.errors: list[str] = []

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    async def get_worklist(self, session: Any, user: str, query: str = "") -> tuple[float, bytes]:
        t0 = time.perf_counter()
        async with session.get(f"{self.base}/api/v1/worklist{query}", headers=self.headers(user)) as r:
            body = await r.read()
            if r.status != 200:
                self.errors.append(f"worklist {r.status}: {body[:200]!r}")
        return (time.perf_counter() - t0) * 1000, body

    async def post(self, session: Any, user: str, path: str, body: dict[str, Any]) -> tuple[float, int]:
        t0 = time.perf_counter()
        async with session.post(f"{self.base}{path}", headers=self.headers(user), json=body) as r:
            await r.read()
            return (time.perf_counter() - t0) * 1000, r.status


async def realistic(load: Load, readers: list[str], seconds: float, claim_chance: float,
                    arrivals: list[Path], dicom_port: int, kind: str) -> dict[str, Any]:
    import aiohttp
    lat: list[float] = []
    when: list[tuple[float, float]] = []  # (seconds into the run, ms): where the slow ones cluster
    claims: list[float] = []
    signs: list[float] = []
    conflicts = 0
    seen: dict[str, float] = {}
    sent: list[tuple[Path, float]] = []
    stop_at = time.monotonic() + seconds

    async def reader(session: Any, user: str, rng: random.Random) -> None:
        nonlocal conflicts
        await asyncio.sleep(rng.uniform(0, 1))
        while time.monotonic() < stop_at:
            ms, body = await load.get_worklist(session, user)
            lat.append(ms)
            when.append((time.monotonic() - t0, ms))
            if rng.random() < claim_chance:
                items = [t for t in json.loads(body)["items"] if t["state"] == "queued"]
                if items:
                    rid = items[0]["id"] if rng.random() < 0.7 else rng.choice(items)["id"]
                    ms, status = await load.post(session, user, f"/api/v1/reading-requests/{rid}/claim", {})
                    claims.append(ms)
                    if status == 200:
                        ms, status = await load.post(session, user, f"/api/v1/reading-requests/{rid}/sign",
                                                     {"findings": "未见明显异常。", "impression": "正常。",
                                                      "critical": False})
                        signs.append(ms)
                        if status != 200:
                            load.errors.append(f"sign {status}")
                    else:
                        conflicts += 1
            await asyncio.sleep(rng.uniform(0.5, 1.5))

    origin, calling_ae, centres = ARRIVALS[kind]

    published = threading.Event()

    async def watcher(session: Any, user: str) -> None:
        # Arrivals are routine with the latest deadlines, so they join the end of the list and
        # nobody claims them: read only the tail (from two before the last count), every 200 ms.
        offset = 0  # (the warm-up's arrival is on the list too: hence ``>`` below)
        while time.monotonic() < stop_at + 5 and not (published.is_set() and len(seen) > len(sent)):
            _, body = await load.get_worklist(session, user, f"?origin={origin}&limit=500&offset={offset}")
            now = time.time()
            items = json.loads(body)["items"]
            for item in items:
                seen.setdefault(item["id"], now)
            offset = max(0, offset + len(items) - 2) if items else 0
            await asyncio.sleep(0.2)

    def publish() -> None:
        # Paced over the run; each study is one storescu association, as a real ECG cart sends it.
        interval = (seconds - 3) / max(1, len(arrivals))
        with ThreadPoolExecutor(2) as pool:
            start = time.monotonic()
            for i, path in enumerate(arrivals):
                pool.submit(_store, path, dicom_port, calling_ae, start + i * interval, sent)
        published.set()

    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.monotonic()
        tasks = [asyncio.create_task(reader(session, u, random.Random(i))) for i, u in enumerate(readers)]
        tasks += [asyncio.create_task(watcher(session, u)) for u, c in WATCHERS.items() if c in centres]
        pub = asyncio.get_running_loop().run_in_executor(None, publish)
        await asyncio.gather(*tasks, pub)
        elapsed = time.monotonic() - t0
    by_second = {}
    for t, ms in when:
        by_second.setdefault(int(t), []).append(ms)
    return {"worklist": summary(lat, min(seconds, elapsed)),
            "worklist_by_second": {s: summary(v) for s, v in sorted(by_second.items())}, "claim": summary(claims), "sign": summary(signs),
            "claim_conflicts": conflicts, "seen": seen, "sent": len(sent), "seconds": round(elapsed, 1)}


def _store(path: Path, port: int, calling_ae: str, not_before: float, sent: list[tuple[Path, float]]) -> None:
    time.sleep(max(0.0, not_before - time.monotonic()))
    # -R: propose only the file's SOP class, as a modality does (not all ~120 storage classes)
    r = subprocess.run([STORESCU, "-R", "-aet", calling_ae, "-aec", "YILIAN", "127.0.0.1", str(port), str(path)],
                       env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True)
    if r.returncode == 0:
        sent.append((path, time.time()))
    else:
        print(f"storescu failed: {r.stderr[-300:]}", file=sys.stderr)


async def warm_up(load: Load, reader: str, arrival: Path, dicom_port: int, kind: str, settle: float) -> None:
    """First use of each path (imports, the PDF and SR of a first signed report, a first
    association) happens once per process: do it before measuring."""
    import aiohttp
    _store(arrival, dicom_port, ARRIVALS[kind][1], time.monotonic(), [])
    async with aiohttp.ClientSession() as session:
        _, body = await load.get_worklist(session, reader)
        rid = next(t["id"] for t in json.loads(body)["items"] if t["state"] == "queued")
        await load.post(session, reader, f"/api/v1/reading-requests/{rid}/claim", {})
        await load.post(session, reader, f"/api/v1/reading-requests/{rid}/sign",
                        {"findings": "未见明显异常。", "impression": "正常。", "critical": False})
        origin, _, centres = ARRIVALS[kind]
        watchers = [u for u, c in WATCHERS.items() if c in centres]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the warm-up study's task is queued (so not measured)
            bodies = [json.loads((await load.get_worklist(session, w, f"?origin={origin}"))[1]) for w in watchers]
            if any(b["items"] for b in bodies):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(settle)  # delivery, monitor and the site rule catch up


async def closed_loop(load: Load, readers: list[str], seconds: float) -> dict[str, Any]:
    import aiohttp
    lat: list[float] = []
    stop_at = time.monotonic() + seconds

    async def reader(session: Any, user: str) -> None:
        while time.monotonic() < stop_at:
            ms, _ = await load.get_worklist(session, user)
            lat.append(ms)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for user in readers:  # connect and warm up outside the measurement
            await load.get_worklist(session, user)
        t0 = time.monotonic()
        stop_at = t0 + seconds
        await asyncio.gather(*(reader(session, u) for u in readers))
        elapsed = time.monotonic() - t0
    return {"worklist": summary(lat, elapsed), "seconds": round(elapsed, 1)}


def wait_caught_up(db: Path, timeout: float = 300) -> float:
    """Wait until every consumer group has read the seeded backlog (offsets stop moving near the log's end)."""
    t0 = time.monotonic()
    last: dict[str, int] = {}
    steady_since = time.monotonic()
    while time.monotonic() - t0 < timeout:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            offsets = dict(con.execute("SELECT grp, seq FROM consumer_offsets").fetchall())
        finally:
            con.close()
        if offsets != last:
            last, steady_since = offsets, time.monotonic()
        elif time.monotonic() - steady_since > 2:
            return time.monotonic() - t0
        time.sleep(0.25)
    raise TimeoutError(f"consumers still catching up after {timeout}s: {last}")


def arrival_latencies(db: Path, seen: dict[str, float], origin: str, since: float) -> dict[str, Any]:
    """From the event log: study.received and reading.queued times of the measured clinic's studies."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        received: dict[str, float] = {}
        queued: dict[str, tuple[str, float]] = {}
        for type_, envelope in con.execute(
                "SELECT type, envelope FROM event_log WHERE type IN ('study.received', 'reading.queued')"):
            e = json.loads(envelope)
            if e["data"].get("organization") != origin:
                continue
            t = datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
            if t < since:
                continue  # the warm-up's
            if type_ == "study.received":
                received.setdefault(e["data"]["study_uid"], t)
            else:
                queued.setdefault(e["data"]["study_uid"], (e["data"]["request_id"], t))
    finally:
        con.close()
    to_queued = [(queued[s][1] - t) * 1000 for s, t in received.items() if s in queued]
    to_visible = [(seen[queued[s][0]] - t) * 1000 for s, t in received.items()
                  if s in queued and queued[s][0] in seen]
    return {"received": len(received), "queued": len(queued), "visible": len(to_visible),
            "to_queued_ms": summary(to_queued), "to_visible_ms": summary(to_visible)}


# --- main ----------------------------------------------------------------------------------

def table(results: dict[str, Any]) -> str:
    rows = [("model", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms")]
    for name in ("single", "realistic", "saturation"):
        if name in results:
            s = results[name]["worklist"]
            rows.append((f"worklist {name}", str(s["n"]), str(s.get("per_second", "")), str(s.get("p50")),
                         str(s.get("p95")), str(s.get("p99")), str(s.get("max"))))
    if "realistic" in results:
        for what in ("claim", "sign"):
            s = results["realistic"][what]
            rows.append((f"{what} (realistic)", str(s["n"]), "", str(s.get("p50")), str(s.get("p95")),
                         str(s.get("p99")), str(s.get("max"))))
    if "arrivals" in results:
        for what in ("to_queued_ms", "to_visible_ms"):
            s = results["arrivals"][what]
            rows.append((f"study.received->{what[3:-3]}", str(s["n"]), "", str(s.get("p50")), str(s.get("p95")),
                         str(s.get("p99")), str(s.get("max"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench worklist", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 tasks, 10 s runs, 30 arrivals (a smoke run)")
    p.add_argument("--tasks", type=int, default=None, help="open tasks to seed (default 10000)")
    p.add_argument("--readers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=None, help="length of the realistic run (default 30)")
    p.add_argument("--saturation-seconds", type=float, default=None, help="default 15")
    p.add_argument("--arrivals", type=int, default=None, help="studies C-STOREd during the run (default 300)")
    p.add_argument("--arrival-kind", choices=sorted(ARRIVALS), default="dx",
                   help="dx: a township's DR (site rule: every DX); ecg: a village ECG cart (the ECG service also "
                        "measures each one)")
    p.add_argument("--claim-chance", type=float, default=0.02, help="chance a refresh is followed by a claim+sign")
    p.add_argument("--profile", action="store_true", help="run the server under cProfile (slower; prints the top)")
    p.add_argument("--py-spy", action="store_true", help="record the server with py-spy (if installed) during the "
                                                         "realistic run; writes bench/out/worklist-profile.txt")
    p.add_argument("--keep", action="store_true", help="keep the data directory")
    p.add_argument("--out", type=Path, default=OUT / "worklist.json", help="results file (default %(default)s)")
    p.add_argument("--sqlite-readers", type=int, default=None,
                   help="the server's SQLite reader connections (?readers=N; default: the store's default)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after the warm-up before measuring")
    p.add_argument("--seeded", metavar="DIR", type=Path,
                   help="reuse the data of a --keep run (copied; for profiling, not for reported figures)")
    p.add_argument("--seed-only", metavar="N", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seed_only is not None:
        print(json.dumps(asyncio.run(seed(args.seed_only))))
        return 0
    tasks = args.tasks or (1000 if args.quick else 10_000)
    seconds = args.seconds or (10 if args.quick else 30)
    sat_seconds = args.saturation_seconds or (5 if args.quick else 15)
    n_arrivals = args.arrivals if args.arrivals is not None else (30 if args.quick else 300)

    from services.core.auth import issue_token
    from services.core.consortium import load_consortium
    from services.core.bus.embedded import EmbeddedBus  # noqa: F401 - fail early if the tree is broken
    from .peers import free_port

    tmp = Path(tempfile.mkdtemp(prefix="yilian-bench-worklist-"))
    data, consortium_path = tmp / "data", tmp / "consortium.yaml"
    readers = write_consortium(consortium_path, args.readers)
    secret = secrets.token_urlsafe(32)
    http, dicom = free_port(), free_port()
    env = server_env(data, consortium_path, secret, http, dicom)
    if args.sqlite_readers:
        env["YILIAN_STORE_URL"] = f"sqlite:///{data}/yilian.db?readers={args.sqlite_readers}"
    results: dict[str, Any] = {"setup": {"tasks": tasks, "readers": len(readers), "cores": os.cpu_count(),
                                         "realistic_seconds": seconds, "saturation_seconds": sat_seconds,
                                         "arrivals": n_arrivals, "arrival_kind": args.arrival_kind,
                                         "claim_chance": args.claim_chance,
                                         "store": "sqlite synchronous=FULL (WAL)", "bus": "embedded",
                                         "sqlite_readers": args.sqlite_readers or "default (4)"}}
    if args.seeded:
        import shutil
        shutil.copytree(args.seeded / "data", data)
        shutil.copy(args.seeded / "consortium.yaml", consortium_path)
        results["seed"] = {"reused": str(args.seeded)}
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
    arrivals = make_arrivals(tmp / "arrivals", n_arrivals + 1, args.arrival_kind)

    consortium = load_consortium(consortium_path)
    tokens = {u: issue_token(consortium, u, secret) for u in [*readers, *WATCHERS]}
    server = Server(env, tmp / "server.log", profile=tmp / "server.prof" if args.profile else None)
    ready = server.start()
    caught_up = wait_caught_up(data / "yilian.db")
    results["seed"]["consumers_caught_up_seconds"] = round(caught_up, 1)
    print(f"consumers caught up with the seeded events in {caught_up:.1f} s", flush=True)
    load = Load(f"http://127.0.0.1:{ready['http_port']}", tokens)
    try:
        print("single reader ...", flush=True)
        results["single"] = asyncio.run(closed_loop(load, readers[:1], min(5.0, sat_seconds)))
        asyncio.run(warm_up(load, readers[0], arrivals.pop(), dicom, args.arrival_kind, args.settle))
        since = time.time()
        print(f"realistic: {len(readers)} readers, {seconds:.0f} s, {n_arrivals} arrivals ...", flush=True)
        spy = None
        spy_bin = Path(sys.executable).parent / "py-spy"
        if args.py_spy and not spy_bin.exists():
            print(f"--py-spy: {spy_bin} not found (pip install py-spy); running without it", flush=True)
        elif args.py_spy:
            OUT.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen([str(spy_bin), "record", "-p", str(server.proc.pid),
                                    "-d", str(int(seconds)), "-f", "raw", "-o", str(OUT / "worklist-profile.raw"),
                                    "--threads", *(["--idle"] if os.environ.get("PYSPY_IDLE") else [])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        real = asyncio.run(realistic(load, readers, seconds, args.claim_chance, arrivals, dicom, args.arrival_kind))
        if spy is not None:
            spy.wait(timeout=60)
        seen = real.pop("seen")
        results["realistic"] = real
        print(f"saturation: {len(readers)} readers closed loop, {sat_seconds:.0f} s ...", flush=True)
        results["saturation"] = asyncio.run(closed_loop(load, readers, sat_seconds))
    finally:
        server.stop()
    results["arrivals"] = {"kind": args.arrival_kind, "from": ARRIVALS[args.arrival_kind][0],
                           **arrival_latencies(data / "yilian.db", seen, ARRIVALS[args.arrival_kind][0], since)}
    results["errors"] = load.errors[:20]
    results["error_count"] = len(load.errors)
    if args.profile:
        import pstats
        stats = pstats.Stats(str(tmp / "server.prof"))
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(30)
    print(table(results))
    if load.errors:
        print(f"{len(load.errors)} errors, first: {load.errors[:3]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"results: {args.out}")
    if not args.keep:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"data kept in {tmp}")
    return 1 if load.errors else 0


if __name__ == "__main__":
    sys.exit(main())
